//! A private JACK server with the dummy driver: real-time paced audio with no
//! sound card, for tests (and the same recipe `cargo xtask demo` uses).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `jackd -d dummy`, stopped on drop.
pub struct JackServer {
    /// The server's name (`jackd -n`); clients reach it by setting `JACK_DEFAULT_SERVER` to this.
    pub name: String,
    child: Child,
}

impl JackServer {
    /// Starts a server named after this process at `rate` Hz, `period` frames.
    pub fn start(rate: u32, period: u32) -> JackServer {
        let name = format!("outboard-test-{}", std::process::id());
        let child = Command::new("jackd")
            .args(["-n", &name, "-R", "-P", "85", "-d", "dummy", "-r", &rate.to_string(), "-p", &period.to_string()])
            .env("JACK_NO_AUDIO_RESERVATION", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start jackd ({e}); `cargo xtask setup` installs jackd2"));
        let server = JackServer { name, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let up = Command::new("jack_lsp")
                .env("JACK_DEFAULT_SERVER", &server.name)
                .env("JACK_NO_START_SERVER", "1")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if up {
                return server;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the JACK dummy server did not come up within 10 s");
    }
}

impl Drop for JackServer {
    fn drop(&mut self) {
        // SIGTERM lets jackd remove its sockets; then make sure it is gone.
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(self.child.id() as i32).expect("a pid"),
            rustix::process::Signal::TERM,
        );
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
