"""Other kernels: fetch them (:mod:`.kernels`) and run bindlab inside them (:mod:`.boot`)."""
