"""The numerical code paths that solutions/ is executed on, and nbval re-executes it on.

A float32 training run rounds differently on CPUs with other vector units: ATen picks its
elementwise and reduction kernels by the widest instruction set present (AVX2 or AVX-512),
and MKL its matrix products by the processor (its own kernels for each Intel generation,
others for AMD). Over a few epochs of SGD those last bits grow into other accuracies, other
best learning rates and other printed numbers. The committed solutions could then match only
the kind of machine they were executed on. Both libraries can be told which path to take:
ATen's AVX2 kernels (every x86-64 CPU of the last decade has AVX2) and MKL's conditional
numerical reproducibility branch ``COMPATIBLE``, the one MKL documents as giving the same
results on Intel and non-Intel processors. With both fixed, an executed solution should be the
same to the last bit on every such machine (what both libraries document; the kit has checked it
on one kind of CPU), at the cost of slower matrix products. Students' runs
keep their CPU's fastest paths; what the notebooks say about such runs holds for either.

This module imports nothing: tasks.py reads it with the system Python.
"""

REFERENCE_NUMERICS: dict[str, str] = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"}
"""Environment variables set for every execution of a solution notebook."""
