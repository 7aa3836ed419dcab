"""Which cross toolchain builds for a CPU architecture and which qemu runs its programs here, by
`platform.machine()` spelling: host facts that the TVM device app and `deploypipe doctor` share."""

from __future__ import annotations

COMPILERS = {"x86_64": "g++", "aarch64": "aarch64-linux-gnu-g++", "armv7l": "arm-linux-gnueabihf-g++"}
APT = {"x86_64": "g++", "aarch64": "g++-aarch64-linux-gnu", "armv7l": "g++-arm-linux-gnueabihf"}  # Debian packages
# qemu user-mode emulator and the Debian cross sysroot it loads the dynamic linker and libc from
EMULATORS = {"aarch64": ("qemu-aarch64-static", "/usr/aarch64-linux-gnu"),
             "armv7l": ("qemu-arm-static", "/usr/arm-linux-gnueabihf")}
