"""PyInstaller hook for llama-cpp-python (none ships with PyInstaller or its contrib hooks).

llama_cpp loads its shared libraries with ctypes from `<package>/lib` (libllama, libggml*,
libmtmd; on Windows also their .dll next to them, on macOS the .dylib and, for Metal builds,
ggml-metal's embedded shader library), so they must sit in `llama_cpp/lib` inside the bundle,
not where PyInstaller's dependency analysis would put them. Its data files (the `server` package's
templates, py.typed) come along; the optional server (FastAPI) is not imported by Shard.
"""

from PyInstaller.utils.hooks import collect_data_files, collect_dynamic_libs

binaries = collect_dynamic_libs("llama_cpp")  # -> [(".../llama_cpp/lib/libllama.so", "llama_cpp/lib"), ...]
datas = collect_data_files("llama_cpp", excludes=["**/__pycache__", "server/**"])
hiddenimports = ["llama_cpp.llama_chat_format", "llama_cpp.llama_grammar", "llama_cpp.llama_cpp", "llama_cpp._ggml"]
excludedimports = ["llama_cpp.server"]
