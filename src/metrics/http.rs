//! The admin HTTP endpoint: `GET /metrics` (Prometheus text) and `GET /health`.
//! Served by shard 0, which gathers every shard's samples over the mesh.

use std::rc::Rc;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::shard::Shard;

const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;

pub async fn serve(shard: Rc<Shard>, listener: TcpListener) {
    let s = shard.clone();
    crate::net::accept_until_shutdown(&shard, &listener, move |stream| {
        let s = s.clone();
        glommio::spawn_local(async move {
            let _ = answer(s, stream).await;
        })
        .detach();
    })
    .await
}

async fn answer(shard: Rc<Shard>, mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > REQUEST_HEAD_BYTES_MAX {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => {
            let samples = shard.gather_metrics().await;
            ("200 OK", "text/plain; version=0.0.4", super::render(&samples))
        }
        ("GET", "/health") => ("200 OK", "text/plain", "ok\n".to_string()),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain", "method not allowed\n".to_string()),
    };
    let resp = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    stream.write_all(resp.as_bytes()).await?;
    stream.close().await
}
