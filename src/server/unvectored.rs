//! A transport wrapper that says it has no vectored writes.
//!
//! hyper and h2 change how they write when the transport claims vectored writes: h2 keeps a DATA
//! payload over 256 bytes out of its write buffer and must flush before it can queue the next
//! frame, so every review answer (a patch is larger) costs its own `writev` and TLS record even
//! when many are ready; hyper's HTTP/1 writes headers and body as separate slices. Over TLS nothing
//! is saved by vectored writes, since rustls copies the plaintext into a record anyway. Told there
//! are none, h2 copies payloads up to 1 KiB into its buffer, so answers that are ready together
//! leave together, and HTTP/1 sends one slice. Every connection of the server, HTTP/1 and HTTP/2,
//! is written through it. Measured with `hack/bench.sh`: see docs/performance.md.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A transport that says it has no vectored writes (see the module documentation).
pub struct Unvectored<T>(pub T);

impl<T: AsyncRead + Unpin> AsyncRead for Unvectored<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Unvectored<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_transport_reports_no_vectored_writes_even_over_a_socket_that_has_them() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        assert!(socket.is_write_vectored());
        assert!(!Unvectored(socket).is_write_vectored());
    }
}
