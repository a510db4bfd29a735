//! Programs the switch runs beside itself and runs again when they exit: the `vde_plug` of
//! each cable uplink and the status node (`--http-node`). After an exit the next start waits
//! 1 s, doubling up to 30 s while the program keeps failing within 10 s of its start. Its
//! standard error goes to a file in the switch's directory, whose last line is the reason
//! shown when it exits.

#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The first wait before a start again.
pub const RETRY: Duration = Duration::from_secs(1);
/// The longest wait.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// A run at least this long resets the wait to [`RETRY`].
const STEADY: Duration = Duration::from_secs(10);

/// One supervised program.
#[derive(Debug)]
pub struct Supervised {
    /// What it is, in messages (`vde_plug`, `status node`).
    pub what: String,
    pub child: Option<Child>,
    started: Instant,
    next_try: Instant,
    backoff: Duration,
    pub restarts: u32,
    /// Why it is not working, for `port/print` and the like (`None`: it is).
    pub down: Option<String>,
    /// Its standard error.
    pub err_path: PathBuf,
}

/// What [`Supervised::supervise`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Nothing,
    /// It exited (the reason is in `down`).
    Exited,
    /// Started, with this pid.
    Started(u32),
    /// Could not be started (the reason is in `down`).
    Failed,
}

impl Supervised {
    pub fn new(what: &str, err_path: PathBuf) -> Supervised {
        let now = Instant::now();
        Supervised {
            what: what.into(),
            child: None,
            started: now,
            next_try: now,
            backoff: RETRY,
            restarts: 0,
            down: Some("not started yet".into()),
            err_path,
        }
    }

    /// Its pid while it runs, 0 otherwise.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Notice an exit, or start the program when its time has come, with the command `cmd`
    /// makes (`None`: it cannot be made now). Standard input and output are /dev/null.
    pub fn supervise(&mut self, now: Instant, cmd: impl FnOnce() -> Option<Command>) -> Event {
        if let Some(ch) = &mut self.child {
            let Ok(Some(status)) = ch.try_wait() else {
                return Event::Nothing;
            };
            let said = std::fs::read_to_string(&self.err_path).unwrap_or_default();
            let last = said
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            let why = format!(
                "{} exited, {status}{}{last}",
                self.what,
                if last.is_empty() { "" } else { ": " }
            );
            self.child = None;
            self.restarts += 1;
            self.backoff = if now.duration_since(self.started) > STEADY {
                RETRY
            } else {
                (self.backoff * 2).min(RETRY_MAX)
            };
            self.next_try = now + self.backoff;
            self.down = Some(why);
            return Event::Exited;
        }
        if now < self.next_try {
            return Event::Nothing;
        }
        let (Some(mut cmd), Ok(err)) = (cmd(), std::fs::File::create(&self.err_path)) else {
            return Event::Nothing;
        };
        self.started = now;
        match cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
        {
            Ok(ch) => {
                let pid = ch.id();
                self.child = Some(ch);
                Event::Started(pid)
            }
            Err(e) => {
                self.backoff = (self.backoff * 2).min(RETRY_MAX);
                self.next_try = now + self.backoff;
                self.down = Some(format!("cannot run {}: {e}", self.what));
                Event::Failed
            }
        }
    }

    /// Stop it (SIGTERM, then SIGKILL after 2 s) and remove its standard error file.
    pub fn stop(&mut self) {
        if let Some(mut ch) = self.child.take() {
            crate::os::terminate(ch.id());
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline && matches!(ch.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = ch.kill();
            let _ = ch.wait();
        }
        let _ = std::fs::remove_file(&self.err_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_again_after_an_exit_and_says_why() {
        let dir = std::env::temp_dir().join(format!("ioth-child-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = Supervised::new("sh", dir.join("err"));
        let cmd = || {
            let mut c = Command::new("sh");
            c.args(["-c", "echo first line >&2; echo the reason >&2; exit 3"]);
            Some(c)
        };
        let t0 = Instant::now();
        assert!(matches!(s.supervise(t0, cmd), Event::Started(p) if p > 0));
        let _ = s.child.as_mut().unwrap().wait();
        // try_wait after wait still reports the status.
        assert_eq!(s.supervise(t0, cmd), Event::Exited);
        let why = s.down.clone().unwrap();
        assert!(
            why.contains("exit status: 3") && why.ends_with(": the reason"),
            "{why}"
        );
        assert_eq!(s.restarts, 1);
        // Not again before the wait, then again.
        assert_eq!(s.supervise(t0, cmd), Event::Nothing);
        assert!(matches!(
            s.supervise(t0 + RETRY_MAX, cmd),
            Event::Started(_)
        ));
        s.stop();
        assert_eq!(s.pid(), 0);
        assert!(!dir.join("err").exists());
        let mut bad = Supervised::new("nothing", dir.join("err2"));
        let missing = || Some(Command::new("/nonexistent/ioth-test"));
        assert_eq!(bad.supervise(Instant::now(), missing), Event::Failed);
        assert!(
            bad.down
                .as_deref()
                .unwrap()
                .starts_with("cannot run nothing")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
