//! Network: the per-core listener and connections.
//!
//! Every shard binds the same address with SO_REUSEPORT (glommio's
//! `TcpListener::bind` sets it), so the kernel spreads connections across
//! cores. A connection is read by one task and written by another (each with
//! its own dup of the socket): the reader decodes a frame, starts its handler
//! and queues the handler's future; the writer awaits the futures in queue
//! order, so requests are processed concurrently but answered in order.
//! Bytes of unanswered requests are bounded per connection and per core; past
//! either bound the reader stops reading the socket (backpressure).

use std::os::unix::io::{AsRawFd, FromRawFd};
use std::rc::Rc;

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::Semaphore;

use crate::handlers::{self, HandlerError};
use crate::limits::{CONNECTION_INFLIGHT_BYTES_MAX, CONNECTION_INFLIGHT_REQUESTS_MAX};
use crate::protocol::frame::{frame_size, parse_request};
use crate::shard::Shard;

/// Smallest socket read: enough for many small pipelined requests at once.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Accepts Kafka connections until the shard starts shutting down.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    let s = shard.clone();
    accept_until_shutdown(&shard, &listener, move |stream| {
        let s = s.clone();
        crate::metrics::add(&s.metrics.connections_accepted, 1);
        glommio::spawn_local(async move {
            crate::metrics::add(&s.metrics.connections_open, 1);
            if let Err(e) = serve(s.clone(), stream).await {
                tracing::debug!(error = %e, "connection closed");
            }
            s.metrics.connections_open.set(s.metrics.connections_open.get() - 1);
        })
        .detach();
    })
    .await
}

/// Hands every accepted connection to `on_accept` until the shard starts shutting down.
pub async fn accept_until_shutdown(shard: &Shard, listener: &TcpListener, on_accept: impl Fn(TcpStream)) {
    loop {
        // The accept future must be polled only when it can make progress: glommio 0.9's
        // accept keeps a clone of the waker at every poll until it completes, so waking this
        // task periodically (a timer here once did) overflows the task's reference count
        // after about 30,000 wake-ups and panics an idle broker.
        let stopping = shard.shutdown.listen();
        if shard.shutting_down.get() {
            return;
        }
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            stopping.await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok(stream)) => on_accept(stream),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] crate::protocol::frame::FrameError),
    #[error("{0}")]
    Handler(#[from] HandlerError),
}

type Queued = glommio::task::JoinHandle<Result<Option<handlers::Out>, ()>>;

/// A started request as the writer sees it: its response, budget units, api key, start time.
type InFlight = (Queued, usize, i16, std::time::Instant);

async fn serve(shard: Rc<Shard>, mut stream: TcpStream) -> Result<(), ConnError> {
    stream.set_nodelay(true).map_err(|e| std::io::Error::other(e.to_string()))?;
    let peer = stream.peer_addr().ok().map(|a| a.ip());
    // SAFETY: dup returns a new descriptor we own; the writer stream takes ownership of it.
    let wfd = unsafe { libc::dup(stream.as_raw_fd()) };
    if wfd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: `wfd` is a valid, owned socket descriptor.
    let mut writer = unsafe { TcpStream::from_raw_fd(wfd) };
    let (tx, rx) = local_channel::new_bounded::<InFlight>(CONNECTION_INFLIGHT_REQUESTS_MAX);
    let conn_budget = Rc::new(Semaphore::new(CONNECTION_INFLIGHT_BYTES_MAX as u64));
    let budget_w = conn_budget.clone();
    let core_w = shard.inflight_bytes.clone();
    let shard_w = shard.clone();
    let writer_task = glommio::spawn_local(async move {
        while let Some((handle, units, api_key, started)) = rx.recv().await {
            let out = handle.await;
            let failed = !matches!(out, Some(Ok(_)));
            shard_w.metrics.record_request(api_key, started.elapsed().as_micros() as u64, failed);
            if let Some(Ok(Some(bytes))) = &out {
                crate::metrics::add(&shard_w.metrics.bytes_out, bytes.len() as u64);
            }
            budget_w.signal(units as u64);
            core_w.signal(units as u64);
            shard_w.inflight_requests.set(shard_w.inflight_requests.get() - 1);
            match out {
                Some(Ok(Some(handlers::Out::One(bytes)))) => {
                    if writer.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Some(handlers::Out::Many(chunks)))) => {
                    let mut failed = false;
                    for c in chunks {
                        if writer.write_all(&c).await.is_err() {
                            failed = true;
                            break;
                        }
                    }
                    if failed {
                        break;
                    }
                }
                Some(Ok(None)) => {}
                Some(Err(())) | None => break,
            }
        }
        let _ = writer.close().await;
    });

    let max = shard.config.socket_request_max_bytes;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    // Bytes still missing from the frame being read (0: read a prefix's worth or more).
    let mut frame_missing = 0usize;
    let result = 'conn: loop {
        // Take every complete frame already buffered.
        loop {
            let size = match frame_size(&buf, max) {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(e) => break 'conn Err(e.into()),
            };
            if buf.len() < 4 + size {
                frame_missing = 4 + size - buf.len();
                break;
            }
            frame_missing = 0;
            let frame = if buf.len() == 4 + size {
                // The buffer holds exactly this frame: hand it over whole, so the frame's
                // allocation has no other owner and a produce can stamp batches in place.
                let mut whole = std::mem::take(&mut buf);
                bytes::Buf::advance(&mut whole, 4);
                whole.freeze()
            } else {
                let _ = buf.split_to(4);
                buf.split_to(size).freeze()
            };
            // Backpressure: wait for room before starting the request.
            let units = size.min(CONNECTION_INFLIGHT_BYTES_MAX);
            if conn_budget.acquire(units as u64).await.is_err() || shard.inflight_bytes.acquire(units as u64).await.is_err() {
                break 'conn Ok(());
            }
            shard.inflight_requests.set(shard.inflight_requests.get() + 1);
            let arrived = std::time::Instant::now();
            let api_key = frame.get(..2).map(|k| i16::from_be_bytes([k[0], k[1]])).unwrap_or(-1);
            let started = match parse_request(frame) {
                Ok(mut req) => {
                    req.peer = peer;
                    handlers::start(&shard, req).await.map_err(ConnError::from)
                }
                Err(e) => Err(e.into()),
            };
            let fut = match started {
                Ok(f) => f,
                Err(e) => {
                    conn_budget.signal(units as u64);
                    shard.inflight_bytes.signal(units as u64);
                    shard.inflight_requests.set(shard.inflight_requests.get() - 1);
                    break 'conn Err(e);
                }
            };
            let handle = glommio::spawn_local(async move {
                fut.await.map_err(|e| {
                    // A response that cannot be produced closes the connection, as
                    // Kafka does: the client must not wait for an answer that never comes.
                    tracing::warn!(error = %e, "request failed; closing the connection");
                })
            })
            .detach();
            if tx.send((handle, units, api_key, arrived)).await.is_err() {
                break 'conn Ok(());
            }
        }
        // Read straight into the frame buffer: the whole rest of a large frame at once.
        let want = frame_missing.max(READ_CHUNK_BYTES);
        let old = buf.len();
        buf.resize(old + want, 0);
        let n = match stream.read(&mut buf[old..]).await {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) => break Err(e.into()),
        };
        buf.truncate(old + n);
        crate::metrics::add(&shard.metrics.bytes_in, n as u64);
    };
    drop(tx);
    writer_task.await;
    result
}
