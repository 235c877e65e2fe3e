"""Quality evaluation: the paper's protocol on real frames (PSNR, SSIM, VIF-P), with figures."""
