//! Link the agent as a freestanding static-pie: no C runtime, no libc, no dynamic loader;
//! the entry points exported in `.dynsym` for the recorder's loader.

fn main() {
    for arg in [
        // No crt objects, no libc, no libgcc: whatever is missing fails the link.
        "-nostartfiles",
        "-nostdlib",
        "-static-pie",
        "-Wl,--no-dynamic-linker",
        "-Wl,--no-undefined",
        // Text relocations would need writable code.
        "-Wl,-z,text",
        "-Wl,-z,noexecstack",
        "-Wl,-z,separate-code",
        // The loader finds these by name.
        "-Wl,--export-dynamic-symbol=mmio_trace_agent_*",
        // Nothing runs the blob as a program; an entry keeps the linker quiet and points at
        // something meaningful.
        "-Wl,-e,mmio_trace_agent_init",
        "-Wl,--build-id=sha1",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
