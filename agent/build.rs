//! Links `coracle-agent` with a linker script that gathers the functions of its `run` path
//! into one section (see agent/link/hot-text.sh), when CORACLE_AGENT_LINK_SCRIPT names one.
//! cross/build.sh does that for the binaries it ships; a plain `cargo build` links as usual.

fn main() {
    println!("cargo:rerun-if-env-changed=CORACLE_AGENT_LINK_SCRIPT");
    let Some(script) = std::env::var_os("CORACLE_AGENT_LINK_SCRIPT").filter(|s| !s.is_empty())
    else {
        return;
    };
    let script = std::path::PathBuf::from(script);
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
}
