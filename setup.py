"""Build the optional C scanner (trailguard.detect._scan); everything else is in pyproject.toml.

The scanner is optional: without a C compiler the build says so and trailguard decodes with its
msgspec path (same results, about half the speed; see docs/ARCHITECTURE.md).
"""

import os
import sys

from setuptools import Extension, setup

args = [] if sys.platform == "win32" else ["-O3", "-std=c11", "-Wall", "-Wextra"]
setup(
    ext_modules=[
        Extension(
            "trailguard.detect._scan",
            sources=["daemon/trailguard/detect/_scan.c"],
            extra_compile_args=args,
            libraries=["dl"] if sys.platform.startswith("linux") else [],  # dlopen, glibc < 2.34
            # A machine without a compiler still installs trailguard (TRAILGUARD_REQUIRE_SCANNER=1,
            # as CI sets, turns a failed build into an error).
            optional=os.environ.get("TRAILGUARD_REQUIRE_SCANNER") != "1",
        )
    ]
)
