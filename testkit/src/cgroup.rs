//! Cgroups of the test's own on the host's unified (cgroup2) hierarchy, for processes that
//! claim a container's cgroup name: made under a private parent, emptied and removed on drop.

use std::fs;
use std::path::{Path, PathBuf};

/// A private parent cgroup (`/ironroot-test-<pid>-<tag>`) and what was made below it.
#[derive(Debug)]
pub struct TestCgroup {
    mount: PathBuf,
    parent: String,
    made: Vec<PathBuf>,
}

impl TestCgroup {
    /// Makes the private parent cgroup, on the cgroup2 mount (the whole of a v2 host,
    /// `unified` on a hybrid one) found in the mount table.
    pub fn new(tag: &str) -> TestCgroup {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let mount = mountinfo
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let dash = f.iter().position(|x| *x == "-")?;
                (f.get(dash + 1) == Some(&"cgroup2") && f.get(3) == Some(&"/"))
                    .then(|| PathBuf::from(f[4]))
            })
            .expect("a cgroup2 mount (the unified hierarchy) on this host");
        let parent = format!("/ironroot-test-{}-{tag}", std::process::id());
        let mut t = TestCgroup {
            mount,
            parent,
            made: Vec::new(),
        };
        let p = t.dir(&t.parent.clone());
        fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        t.made.push(p);
        t
    }

    fn dir(&self, cgroup: &str) -> PathBuf {
        self.mount.join(cgroup.trim_start_matches('/'))
    }

    /// Makes `<parent>/<rel>` (each level), the leaf owned by `uid`; its cgroup path as
    /// `/proc/PID/cgroup` shows it.
    pub fn create(&mut self, rel: &str, uid: u32) -> String {
        let mut path = self.parent.clone();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            path = format!("{path}/{part}");
            let d = self.dir(&path);
            if !d.exists() {
                fs::create_dir(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
                self.made.push(d);
            }
        }
        let leaf = self.dir(&path);
        std::os::unix::fs::chown(&leaf, Some(uid), None)
            .unwrap_or_else(|e| panic!("chown {}: {e}", leaf.display()));
        path
    }

    /// Moves process `pid` into the cgroup `path` (from [`Self::create`]).
    pub fn add_process(&self, path: &str, pid: u32) {
        let procs = self.dir(path).join("cgroup.procs");
        fs::write(&procs, pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", procs.display()));
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Deepest first; any process still inside goes back to the root.
        for d in self.made.iter().rev() {
            move_out(d, &self.mount);
            let _ = fs::remove_dir(d);
        }
    }
}

fn move_out(dir: &Path, root: &Path) {
    let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) else {
        return;
    };
    for pid in procs.lines() {
        let _ = fs::write(root.join("cgroup.procs"), pid);
    }
}
