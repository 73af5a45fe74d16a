//! The log lines of one test binary, captured by its one global tracing subscriber, so a
//! test can assert on what the server logged (refreshes, refusals, expiry).

use std::sync::{Arc, Mutex, OnceLock};

fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        tracing_subscriber::fmt().with_ansi(false).with_writer(move || Capture(b.clone())).init();
        buf
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (once per test binary); call before the code under test logs.
pub fn install() {
    logs();
}

/// Everything logged so far in this test binary.
pub fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}
