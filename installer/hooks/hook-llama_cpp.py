"""PyInstaller hook for llama-cpp-python (none ships with PyInstaller or its contrib hooks).

llama_cpp loads its shared libraries with ctypes from `<package>/lib` (libllama, libggml*,
libmtmd; on Windows also their .dll next to them, on macOS the .dylib and, for Metal builds,
ggml-metal's embedded shader library), so they must sit in `llama_cpp/lib` inside the bundle,
not where PyInstaller's dependency analysis would put them. Its data files (the `server` package's
templates, py.typed) come along; the optional server (FastAPI) is not imported by Shard.
"""

from PyInstaller.utils.hooks import collect_data_files, collect_dynamic_libs

import re

# -> [(".../llama_cpp/lib/libllama.so", "llama_cpp/lib"), ...]. The wheel holds each Linux library three
# times (libllama.so, .so.0, .so.0.5.0: pip does not keep symlinks): the fully versioned copy is never
# looked up (ctypes opens lib*.so, the loader wants the soname lib*.so.0), so it stays out; the spec
# turns lib*.so into a link to lib*.so.0 after collecting.
binaries = [b for b in collect_dynamic_libs("llama_cpp") if not re.search(r"\.so\.\d+\.\d+", b[0])]
datas = collect_data_files("llama_cpp", excludes=["**/__pycache__", "server/**", "lib/**"])
hiddenimports = ["llama_cpp.llama_chat_format", "llama_cpp.llama_grammar", "llama_cpp.llama_cpp", "llama_cpp._ggml"]
excludedimports = ["llama_cpp.server"]
