//! Small single-core building blocks shared by the modules: a wall clock in
//! milliseconds, a local (non-`Send`) notification primitive, and a seedable
//! pseudo-random generator for test data and load generation.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
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
    waiters: RefCell<HashMap<u64, Waker, BuildHasherDefault<IdHasher>>>,
    /// Wakers being woken by `notify_all`, kept for its capacity (no allocation per call).
    waking: RefCell<Vec<Waker>>,
}

impl LocalNotify {
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        // Wakers are moved out before any is woken: waking must not find the map borrowed.
        let mut waking = self.waking.take();
        waking.extend(self.waiters.borrow_mut().drain().map(|(_, w)| w));
        for w in waking.drain(..) {
            w.wake();
        }
        *self.waking.borrow_mut() = waking;
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

/// Hashes a listener id (a counter, unique per [`LocalNotify`]) with one
/// multiplication: no attacker chooses these keys, so SipHash's cost buys nothing.
#[derive(Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
    fn write_u64(&mut self, v: u64) {
        // Spread sequential ids over the table's buckets (hashbrown uses the top bits too).
        self.0 = v.wrapping_mul(0x9E37_79B9_7F4A_7C15);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Count(AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn notify_wakes_every_registered_listener_once_and_only_those() {
        let n = LocalNotify::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        for round in 1..=3usize {
            let mut listeners: Vec<_> = (0..100).map(|_| Box::pin(n.listen())).collect();
            for l in listeners.iter_mut() {
                assert!(l.as_mut().poll(&mut cx).is_pending());
            }
            // A listener that goes away before the notification is neither woken nor kept.
            listeners.truncate(60);
            assert_eq!(n.waiters.borrow().len(), 60);
            n.notify_all();
            assert_eq!(count.0.load(Ordering::SeqCst), 60 * round, "round {round}");
            assert!(n.waiters.borrow().is_empty());
            for l in listeners.iter_mut() {
                assert!(l.as_mut().poll(&mut cx).is_ready());
            }
        }
        // Created after the last notification: pending until the next one.
        let mut late = Box::pin(n.listen());
        assert!(late.as_mut().poll(&mut cx).is_pending());
        n.notify_all();
        assert!(late.as_mut().poll(&mut cx).is_ready());
        assert_eq!(count.0.load(Ordering::SeqCst), 181);
    }
}
