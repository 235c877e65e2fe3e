"""Archive reprocessing (``dicom-sr batch``): streaming plan, plain tasks, local or Dask."""
