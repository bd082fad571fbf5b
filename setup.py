"""Compile every ext/<name>.pyx into flight.kernels.<name>.

KESTREL_EXT=name1,name2 limits a development build to those kernels, so one
kernel under construction does not stop the others from building.
"""
import os
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
ONLY = {n for n in os.environ.get("KESTREL_EXT", "").split(",") if n}


def kernel_extensions():
    extensions = []
    for source in sorted((HERE / "ext").glob("*.pyx")):
        name = source.stem
        if ONLY and name not in ONLY:
            continue
        extensions.append(
            Extension(
                f"flight.kernels.{name}",
                [str(source.relative_to(HERE))],
                include_dirs=[numpy.get_include(), "ext"],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                extra_compile_args=["-O3"],
            )
        )
    return extensions


setup(
    ext_modules=cythonize(
        kernel_extensions(),
        language_level=3,
        compiler_directives={"embedsignature": True},
    ),
)
