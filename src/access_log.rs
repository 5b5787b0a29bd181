//! The access log's writer (`proxy.access_log`).
//!
//! Why not `log::info!`: env_logger writes every record to stderr with a `write` of its own
//! under a lock, which cost 10-26% of keep-alive throughput on the load harness
//! (docs/performance.md). Here a request hands its line to a bounded channel (no system call on
//! the request path, no wake-up of another thread) and one thread writes them out every 50 ms,
//! whatever has queued in `write`s of up to 64 KiB.
//!
//! Nothing is lost while the writer keeps up and the process stops normally ([`flush`], called
//! when the server stops, waits for every queued line); a process that is killed loses the
//! last 50 ms. If the writer falls `CAPACITY` lines behind (stderr blocked), further lines are
//! dropped and counted in `mtls_gateway_access_log_dropped_total` rather than stalling
//! requests.

use std::io::{BufWriter, Write};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::OnceLock;
use std::time::Duration;

use crate::metrics;

/// Lines queued at most (about 200 bytes each: 13 MiB at worst).
const CAPACITY: usize = 65_536;

enum Msg {
    Line(String),
    /// Answered once every line queued before it is written and flushed.
    Flush(mpsc::Sender<()>),
}

static WRITER: OnceLock<SyncSender<Msg>> = OnceLock::new();

/// Starts the writer thread (once per process; later calls do nothing).
pub fn enable() -> std::io::Result<()> {
    if WRITER.get().is_some() {
        return Ok(());
    }
    let (tx, rx) = mpsc::sync_channel(CAPACITY);
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || write_loop(rx, std::io::stderr()))?;
    // A racing second call would start a second thread whose sender is dropped here, so that
    // thread ends at once.
    let _ = WRITER.set(tx);
    Ok(())
}

/// Queues one line (without its newline). Never blocks.
pub fn log(line: String) {
    if let Some(tx) = WRITER.get() {
        offer(tx, line);
    }
}

fn offer(tx: &SyncSender<Msg>, line: String) {
    if let Err(TrySendError::Full(_)) = tx.try_send(Msg::Line(line)) {
        metrics::ACCESS_LOG_DROPPED.inc();
    }
}

/// Waits (at most `timeout`) until every line queued so far is written.
pub fn flush(timeout: Duration) {
    if let Some(tx) = WRITER.get() {
        let (ack, done) = mpsc::channel();
        if tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.recv_timeout(timeout);
        }
    }
}

/// How often the writer wakes up to write what has queued.
const INTERVAL: Duration = Duration::from_millis(50);

/// The writer: every [`INTERVAL`], writes whatever has queued in as few `write`s as the 64 KiB
/// buffer allows, then flushes. It sleeps rather than waiting on the channel, so a request that
/// queues a line never has to wake it (a wake-up per line cost more CPU than the line).
/// Write errors (a closed stderr) are ignored: there is nowhere else to report them.
fn write_loop<W: Write>(rx: Receiver<Msg>, out: W) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let mut acks = Vec::new();
    loop {
        std::thread::sleep(INTERVAL);
        let gone = loop {
            match rx.try_recv() {
                Ok(Msg::Line(line)) => {
                    let _ = out.write_all(line.as_bytes());
                    let _ = out.write_all(b"\n");
                }
                Ok(Msg::Flush(ack)) => acks.push(ack),
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        let _ = out.flush();
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
        if gone {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A `Write` the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().map(|v| v.clone()).unwrap_or_default())
                .unwrap_or_default()
        }
    }

    #[test]
    fn every_line_is_written_once_in_order_and_a_flush_waits_for_them() {
        let out = Shared::default();
        let (tx, rx) = mpsc::sync_channel(CAPACITY);
        let writer = {
            let out = out.clone();
            std::thread::spawn(move || write_loop(rx, out))
        };
        for i in 0..20_000 {
            offer(&tx, format!("line {i}"));
        }
        let (ack, done) = mpsc::channel();
        tx.send(Msg::Flush(ack)).expect("writer alive");
        done.recv_timeout(Duration::from_secs(10)).expect("flushed");
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000);
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(*l, format!("line {i}"));
        }
        drop(tx);
        writer
            .join()
            .expect("the writer ends when the senders are gone");
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        // No writer: nothing drains the queue of 2.
        let (tx, _rx) = mpsc::sync_channel(2);
        let before = metrics::ACCESS_LOG_DROPPED.get();
        for i in 0..5 {
            offer(&tx, format!("line {i}"));
        }
        assert!(metrics::ACCESS_LOG_DROPPED.get() >= before + 3);
    }
}
