"""The reasoning stage: item descriptions and user preferences from an MLLM."""
