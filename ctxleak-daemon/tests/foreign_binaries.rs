//! A Go program nobody here built: the Go toolchains' own `pprof` (Go 1.21–1.24 ship it
//! prebuilt, without DWARF), serving its web UI on loopback while clients hit it. ctxleak
//! attaches with its defaults, counts its goroutines exactly, against the program's own dump
//! of every goroutine (SIGQUIT with GOTRACEBACK=all) at a quiet moment, and names no leak.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{
    Ctxleak, fixture, free_port, go_versions, http_get_status, newest_go, workspace_root,
};
use serde_json::Value;

/// The prebuilt `pprof` of a toolchain, if it ships one (from Go 1.25 on, `go tool` builds it
/// on demand instead).
fn pprof_of(version: &str) -> Option<std::path::PathBuf> {
    let path = workspace_root()
        .join("target/tools/go")
        .join(version)
        .join("go/pkg/tool/linux_amd64/pprof");
    path.is_file().then_some(path)
}

/// Goroutines in a traceback dump: `goroutine N [state]:` (Go 1.23 and later add
/// `gp=... m=...` before the state) with N > 0 (N = 0 is a thread with no goroutine, where
/// the signal landed).
fn dumped_goroutines(dump: &str) -> usize {
    dump.lines()
        .filter(|line| line.contains(" [") && line.ends_with("]:"))
        .filter_map(|line| line.strip_prefix("goroutine "))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|goid| goid.parse::<u64>().is_ok_and(|goid| goid > 0))
        .count()
}

fn check(pprof: &std::path::Path, profile: &std::path::Path) -> Result<String, String> {
    let address = format!("127.0.0.1:{}", free_port());
    let mut server = Command::new(pprof)
        .arg(format!("-http={address}"))
        .arg("-no_browser")
        .arg(profile)
        .env("GOTRACEBACK", "all")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", pprof.display()))?;
    let result = (|| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while common::try_http_request(&address, "/ui/top").is_err() {
            if Instant::now() > deadline {
                return Err("pprof did not serve its UI within 30 s".to_owned());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let ctxleak = Ctxleak::attach_with(server.id(), &["--census-interval", "1s"]);
        // Clients: each request a connection of its own, so goroutines come and go.
        let until = Instant::now() + Duration::from_secs(5);
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let address = address.clone();
                std::thread::spawn(move || {
                    let mut served = 0;
                    while Instant::now() < until {
                        if http_get_status(&address, "/ui/top").0 == 200 {
                            served += 1;
                        }
                    }
                    served
                })
            })
            .collect();
        let served: usize = clients.into_iter().filter_map(|c| c.join().ok()).sum();
        // Quiet: the connections are closed; a census from now on sees it at rest.
        std::thread::sleep(Duration::from_secs(2));
        let (status, body) = http_get_status(&ctxleak.metrics_url, "/api/groups");
        if status != 200 {
            return Err(format!("/api/groups: {status} {body}"));
        }
        let groups: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let counted = groups["goroutines_user"].as_u64().unwrap_or(0)
            + groups["goroutines_system"].as_u64().unwrap_or(0);
        if let Some(suspect) = groups["groups"]
            .as_array()
            .and_then(|groups| groups.iter().find(|g| g["suspect"] == true))
        {
            return Err(format!("a leak suspect in a healthy server: {suspect}"));
        }
        let (_, leaks) = http_get_status(&ctxleak.metrics_url, "/api/leaks");
        let leaks: Value = serde_json::from_str(&leaks).map_err(|e| e.to_string())?;
        for verdict in ["unreleased", "outliving"] {
            if leaks[verdict].as_array().is_some_and(|v| !v.is_empty()) {
                return Err(format!("{verdict} contexts in a healthy server: {leaks}"));
            }
        }
        // The program's own view, as of now.
        // SAFETY: kill(2) on a child we started and have not waited for.
        unsafe { libc::kill(server.id() as i32, libc::SIGQUIT) };
        let mut dump = String::new();
        if let Some(mut stderr) = server.stderr.take() {
            let _ = stderr.read_to_string(&mut dump);
        }
        let dumped = dumped_goroutines(&dump);
        if dumped as u64 != counted {
            return Err(format!(
                "ctxleak counted {counted} goroutines (user and system), the program's own dump {dumped}:\n{dump}"
            ));
        }
        Ok(format!(
            "{served} requests served; {counted} goroutines, as its own dump says"
        ))
    })();
    let _ = server.kill();
    let _ = server.wait();
    result
}

#[test]
fn the_toolchains_own_pprof_is_counted_exactly_and_not_accused() {
    let dir = std::env::temp_dir().join(format!("ctxleak-foreign-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    let profile = dir.join("goroutine.pb.gz");
    // Any real profile will do for pprof to serve: the goroutineprofile fixture writes one.
    let written = Command::new(fixture(&newest_go(), "goroutineprofile"))
        .arg(&profile)
        .stdout(Stdio::null())
        .status()
        .expect("the goroutineprofile fixture runs");
    assert!(written.success() && profile.is_file(), "no profile written");
    let versions: Vec<(String, std::path::PathBuf)> = go_versions()
        .into_iter()
        .filter_map(|version| pprof_of(&version).map(|pprof| (version, pprof)))
        .collect();
    assert!(
        !versions.is_empty(),
        "no installed toolchain ships a prebuilt pprof (Go 1.21-1.24 do)"
    );
    let mut failures = Vec::new();
    for (version, pprof) in [versions.first(), versions.last()].into_iter().flatten() {
        match check(pprof, &profile) {
            Ok(summary) => eprintln!("go{version} pprof: {summary}"),
            Err(error) => failures.push(format!("go{version} pprof: {error}")),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
