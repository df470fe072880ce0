//! Captured plugin stdout/stderr: kept up to a byte limit, the rest counted
//! and dropped. A chatty plugin must neither fill the host's memory nor fail
//! because of it (a write error would make Rust's `println!` panic).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

#[derive(Default)]
struct Buffer {
    kept: Vec<u8>,
    dropped: usize,
}

/// One captured stream. Clones share the buffer.
#[derive(Clone)]
pub(crate) struct BoundedOutput {
    limit: usize,
    buffer: Arc<Mutex<Buffer>>,
}

impl BoundedOutput {
    pub(crate) fn new(limit: usize) -> Self {
        BoundedOutput {
            limit,
            buffer: Arc::default(),
        }
    }

    pub(crate) fn push(&self, bytes: &[u8]) {
        let mut b = self.buffer.lock().unwrap();
        let room = self.limit.saturating_sub(b.kept.len());
        let keep = bytes.len().min(room);
        b.kept.extend_from_slice(&bytes[..keep]);
        b.dropped += bytes.len() - keep;
    }

    /// The captured text and how many bytes were dropped.
    pub(crate) fn take(&self) -> (String, usize) {
        let mut b = self.buffer.lock().unwrap();
        let text = String::from_utf8_lossy(&b.kept).into_owned();
        let dropped = b.dropped;
        *b = Buffer::default();
        (text, dropped)
    }
}

impl IsTerminal for BoundedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for BoundedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for BoundedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for BoundedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for BoundedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_the_limit_and_counts_the_rest() {
        let out = BoundedOutput::new(5);
        out.push(b"hel");
        out.push(b"lo world");
        assert_eq!(out.take(), ("hello".to_string(), 6));
        assert_eq!(out.take(), (String::new(), 0));
    }
}
