//! Records the commit the `cairn` binary is built from, for `cairn
//! --version`'s `Git SHA:` line (as etcd's). Outside a git checkout (a
//! source tarball) it says so.

fn main() {
    let sha = std::process::Command::new("git")
        .args(["rev-parse", "--short=9", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "not a git checkout".to_string());
    println!("cargo:rustc-env=CAIRN_GIT_SHA={sha}");
    // A new commit changes HEAD or the branch it points at.
    for path in git_paths() {
        println!("cargo:rerun-if-changed={path}");
    }
}

/// The paths whose change means a new HEAD commit (in a worktree too):
/// HEAD, the directory of the branch it names (a commit rewrites the
/// branch's file there, or creates it when the branch was packed), and the
/// packed refs. Only paths that exist: cargo runs a build script again on
/// every build while a path it watches is missing, and a checkout whose
/// refs were never packed has no `packed-refs`.
fn git_paths() -> Vec<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let mut refs = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some((dir, _)) = branch.rsplit_once('/') {
            refs.push(dir.to_string());
        }
    }
    refs.iter()
        .filter_map(|r| git(&["rev-parse", "--git-path", r]))
        .filter(|path| std::path::Path::new(path).exists())
        .collect()
}
