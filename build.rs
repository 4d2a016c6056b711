//! Records the git revision the binary is built from, for `drover --version`.

fn main() {
    let revision = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|r| !r.is_empty());
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    let text = match revision {
        Some(r) if dirty => format!("git {r}, modified"),
        Some(r) => format!("git {r}"),
        // A source tarball: the packager may say which revision it is.
        None => std::env::var("DROVER_GIT_REVISION").unwrap_or_else(|_| "no git revision".into()),
    };
    println!("cargo:rustc-env=DROVER_GIT_REVISION={text}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
    println!("cargo:rerun-if-env-changed=DROVER_GIT_REVISION");
}
