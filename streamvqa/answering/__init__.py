"""Answer engines: who runs stage 9 (generation) over an answer cache the session assembled.

`transformers` (the default) decodes in this process with the engine's own model; `vllm` hands
the assembled KV to a vLLM process (its own virtualenv, `.venv-vllm`) through a KV connector.
The vLLM-side modules (`vllm_server`, `connector`, `wire`, `kvfile`) import only the standard
library, numpy, torch and vllm: they run under a different interpreter.
"""
