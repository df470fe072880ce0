//! A backend connection whose replies are measured while they arrive.
//!
//! Client libraries (tokio-postgres, redis-rs) buffer a whole protocol
//! message before they hand it over, so counting what they return comes
//! too late: a 400 MB value is already in host memory. [`LimitedStream`]
//! sits under the library instead. Every byte the server sends goes
//! through a protocol [`Framer`] that knows, from each message's header,
//! how large it will be; the read fails as soon as a reply would go over
//! its budget, before its body is read. The library then sees an I/O
//! error and drops the connection; the host learns why from the
//! [`Tripwire`].

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Follows one protocol's framing over the bytes a server sends.
pub(crate) trait Framer: Send + Unpin + 'static {
    /// Why a reply was refused.
    type Error: std::error::Error + Clone + Send + Sync + 'static;

    /// Takes the next bytes from the server, in order, split anywhere.
    /// Fails when they break the reply budget or the framing.
    fn feed(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;
}

/// Where a [`LimitedStream`] records why it failed, for the host to read
/// after the library reports only "connection closed".
pub(crate) struct Tripwire<E>(Arc<Mutex<Option<E>>>);

impl<E> Clone for Tripwire<E> {
    fn clone(&self) -> Self {
        Tripwire(self.0.clone())
    }
}

impl<E: Clone> Tripwire<E> {
    pub(crate) fn new() -> Self {
        Tripwire(Arc::new(Mutex::new(None)))
    }

    /// The breach, if the stream failed on one.
    pub(crate) fn tripped(&self) -> Option<E> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn trip(&self, e: E) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }
}

/// `inner` with every byte it reads checked by `F`.
pub(crate) struct LimitedStream<S, F: Framer> {
    inner: S,
    framer: F,
    tripwire: Tripwire<F::Error>,
    failed: bool,
}

impl<S, F: Framer> LimitedStream<S, F> {
    pub(crate) fn new(inner: S, framer: F) -> (Self, Tripwire<F::Error>) {
        let tripwire = Tripwire::new();
        let stream = LimitedStream {
            inner,
            framer,
            tripwire: tripwire.clone(),
            failed: false,
        };
        (stream, tripwire)
    }
}

impl<S: AsyncRead + Unpin, F: Framer> AsyncRead for LimitedStream<S, F> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the stream was refused earlier",
            )));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Err(e) = this.framer.feed(&buf.filled()[before..]) {
            // Hand nothing of the refused reply over.
            buf.set_filled(before);
            this.tripwire.trip(e.clone());
            this.failed = true;
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin, F: Framer> AsyncWrite for LimitedStream<S, F> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A TCP or Unix-socket connection to a backend.
pub(crate) enum Socket {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Socket::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Socket::Tcp(s) => s.is_write_vectored(),
            Socket::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_flush(cx),
            Socket::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Refuses any byte `b'!'`.
    #[derive(Debug, Clone, thiserror::Error)]
    #[error("bang")]
    struct Bang;

    struct NoBang;
    impl Framer for NoBang {
        type Error = Bang;
        fn feed(&mut self, bytes: &[u8]) -> Result<(), Bang> {
            if bytes.contains(&b'!') {
                Err(Bang)
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn a_refused_read_fails_stays_failed_and_trips_the_wire() {
        let (mut server, client) = tokio::io::duplex(64);
        let (mut s, wire) = LimitedStream::new(client, NoBang);
        server.write_all(b"fine").await.unwrap();
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"fine");
        assert!(wire.tripped().is_none());
        server.write_all(b"no!").await.unwrap();
        let e = s.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(wire.tripped().is_some());
        server.write_all(b"more").await.unwrap();
        assert!(
            s.read(&mut buf).await.is_err(),
            "a failed stream stays failed"
        );
        // Writes pass through untouched.
        s.write_all(b"out").await.unwrap();
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"out");
    }
}
