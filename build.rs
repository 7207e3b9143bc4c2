//! Link libtorch so that the `robustd` binary runs without LD_LIBRARY_PATH.
//!
//! rustc links with `--as-needed`, which drops libtorch.so (and with it libtorch_cuda, whose
//! kernels register themselves at load time and are never referenced by symbol), and gives the
//! binary no rpath. torch-sys tells dependents where it found libtorch through the `links = "tch"`
//! metadata key `libtorch_lib`, which cargo hands us as `DEP_TCH_LIBTORCH_LIB`.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        // NOTE: torch-sys only exports the folder when it built against a real libtorch; without
        // it the link step fails with torch-sys's own message, which names the fix.
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-L{lib_dir}");
    println!("cargo:rustc-link-arg=-ltorch");
    if std::path::Path::new(&lib_dir)
        .join("libtorch_cuda.so")
        .exists()
    {
        println!("cargo:rustc-link-arg=-ltorch_cuda");
    }
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
}
