from setuptools import find_packages, setup

setup(
    name="fairseq-vqlatent",
    version="0.1.0",
    description="fairseq plugin: fast non-autoregressive translation through VQ latent codes trained by soft EM",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["fairseq_vqlatent", "fairseq_vqlatent.*", "vqlatent_runtime"]),
    entry_points={
        "console_scripts": [
            "vqlatent-export = fairseq_vqlatent.export:main",
            # onnxruntime, numpy and the tokenisers only: never torch or fairseq
            "vqlatent-translate = vqlatent_runtime.cli:main",
        ]
    },
    # torch is installed first (see Makefile); any 2.x that fairseq-fixed accepts works.
    install_requires=[
        "torch>=2.1",
        "fairseq-fixed==0.12.3.1",
        "hydra-core==1.3.2",
        "omegaconf==2.3.0",
        "sacrebleu>=2.3,<3",
        "sentencepiece>=0.1.99",
        "subword-nmt>=0.3.8",
        "sacremoses>=0.0.53",
        "vector-quantize-pytorch>=1.14,<2",  # FSQ
    ],
    extras_require={
        "onnx": ["onnxruntime>=1.17", "onnx>=1.14"],  # --latent-onnx, vqlatent-export, vqlatent-translate
        "test": ["pytest>=7", "pytest-xdist>=3.5", "onnxruntime>=1.17", "onnx>=1.14"],
        "benchmark": ["matplotlib>=3.5", "ctranslate2>=4.0", "onnxruntime>=1.17", "onnx>=1.14"],
    },
    license="MIT",
)
