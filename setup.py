"""Build and install awm_fast.

`kernels/` installs as the subpackage `awm_fast.kernels` (never as a top-level `kernels` module: a PyPI
package of that name exists). Install without build isolation so the build uses the torch already
installed instead of pulling a second one: `pip install --no-build-isolation -e .`
"""

from setuptools import setup

PACKAGES = ["awm_fast", "awm_fast.ops", "awm_fast.kernels"]
PACKAGE_DIR = {"awm_fast": "awm_fast", "awm_fast.ops": "awm_fast/ops", "awm_fast.kernels": "kernels"}

setup(
    name="awm_fast",
    version="0.1.0",
    description="Fast Adversarial Weight Masking: one-shot backdoor erasing for PyTorch models",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    install_requires=["torch<=2.14.1", "numpy"],
    entry_points={"console_scripts": ["awm-fast=awm_fast.cli:main"]},
)
