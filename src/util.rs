//! Small single-core building blocks shared by the modules: a wall clock in
//! milliseconds, a local (non-`Send`) notification primitive, and a seedable
//! pseudo-random generator for test data and load generation.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Milliseconds since the Unix epoch, as Kafka timestamps are.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Wakes every task waiting on it. Lives on one core: no atomics, no locks.
///
/// A listener created by [`LocalNotify::listen`] completes at the first
/// [`LocalNotify::notify_all`] after its creation, so "check state, then
/// listen" races are avoided by creating the listener before checking.
#[derive(Default)]
pub struct LocalNotify {
    generation: Cell<u64>,
    next_id: Cell<u64>,
    waiters: RefCell<HashMap<u64, Waker>>,
}

impl LocalNotify {
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let waiters: Vec<Waker> = self.waiters.borrow_mut().drain().map(|(_, w)| w).collect();
        for w in waiters {
            w.wake();
        }
    }

    pub fn listen(&self) -> Listen<'_> {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        Listen { notify: self, id, generation: self.generation.get() }
    }
}

pub struct Listen<'a> {
    notify: &'a LocalNotify,
    id: u64,
    generation: u64,
}

impl Future for Listen<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.generation {
            return Poll::Ready(());
        }
        self.notify.waiters.borrow_mut().insert(self.id, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Listen<'_> {
    fn drop(&mut self) {
        self.notify.waiters.borrow_mut().remove(&self.id);
    }
}

/// Completes when the first of `futures` completes (the others are dropped).
pub async fn first_of(mut futures: Vec<Pin<Box<dyn Future<Output = ()>>>>) {
    std::future::poll_fn(move |cx| {
        for f in futures.iter_mut() {
            if f.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await
}

/// SplitMix64: small, fast, deterministic per seed; plenty for payload bytes
/// and key choice (no cryptographic use).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}
