/* dicom-sr index: load each thumbnail when it comes near the screen (a study of many series
 * opens at once). Native loading=lazy is not used: browsers load everything at once on file://. */
(function () {
  "use strict";
  var images = [].slice.call(document.querySelectorAll("img[data-src]"));
  function load(img) { if (!img.src) img.src = img.getAttribute("data-src"); }
  if (!("IntersectionObserver" in window)) { images.forEach(load); return; }
  var seen = new IntersectionObserver(function (entries) {
    entries.forEach(function (e) {
      if (e.isIntersecting) { load(e.target); seen.unobserve(e.target); }
    });
  }, { rootMargin: "300px 0px" });
  images.forEach(function (img) { seen.observe(img); });
})();
