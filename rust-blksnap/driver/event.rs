// SPDX-License-Identifier: GPL-2.0

//! The event queue of a snapshot, read by `IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT`.
//!
//! Events are delivered in the order they were queued, each to one waiter. Once the snapshot is
//! destroyed the queue is closed: every waiter wakes up with `ESRCH`, and so does every later
//! one.

use kernel::{
    new_condvar, new_mutex,
    prelude::*,
    sync::{CondVar, CondVarTimeoutResult, Mutex},
    time::{msecs_to_jiffies, Instant, Monotonic},
};

/// Bytes of payload an event carries at most.
pub(crate) const EVENT_DATA_MAX: usize = 16;

/// One event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    /// When it happened: nanoseconds of the monotonic clock since blksnap started.
    pub(crate) time: i64,
    /// The event code of the user interface.
    pub(crate) code: u32,
    /// The payload, `len` bytes of it.
    pub(crate) data: [u8; EVENT_DATA_MAX],
    pub(crate) len: usize,
}

impl Event {
    /// Makes an event with `code` and the payload `data`, at most [`EVENT_DATA_MAX`] bytes
    /// (longer payloads are cut).
    pub(crate) fn new(since: &Instant<Monotonic>, code: u32, data: &[u8]) -> Self {
        let mut ev = Self {
            time: since.elapsed().as_nanos(),
            code,
            data: [0; EVENT_DATA_MAX],
            len: data.len().min(EVENT_DATA_MAX),
        };
        ev.data[..ev.len].copy_from_slice(&data[..ev.len]);
        ev
    }
}

struct Inner {
    events: KVec<Event>,
    closed: bool,
}

/// The events of one snapshot.
#[pin_data]
pub(crate) struct EventQueue {
    #[pin]
    inner: Mutex<Inner>,
    #[pin]
    cond: CondVar,
}

impl EventQueue {
    /// Makes an empty, open queue.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            inner <- new_mutex!(Inner {
                events: KVec::new(),
                closed: false,
            }),
            cond <- new_condvar!(),
        })
    }

    /// Queues `event` and wakes a waiter. An event that finds no memory is lost (and logged).
    /// May sleep.
    pub(crate) fn push(&self, event: Event) {
        let mut inner = self.inner.lock();
        if inner.closed {
            return;
        }
        if inner.events.push(event, GFP_NOIO).is_err() {
            pr_warn!("event {} lost: out of memory\n", event.code);
            return;
        }
        drop(inner);
        self.cond.notify_one();
    }

    /// Closes the queue: waiters wake up with `ESRCH`, and the events not read are dropped.
    pub(crate) fn close(&self) {
        let mut inner = self.inner.lock();
        inner.closed = true;
        inner.events.clear();
        drop(inner);
        self.cond.notify_all();
    }

    /// Returns the number of events not read yet.
    #[cfg_attr(
        not(CONFIG_BLKSNAP_KUNIT_TEST),
        expect(dead_code, reason = "only the tests ask for it")
    )]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().events.len()
    }

    /// Takes the oldest event, waiting up to `timeout_ms` milliseconds for one.
    ///
    /// Fails with `ENOENT` when the time runs out, `EINTR` when a signal arrives, `ESRCH` once
    /// the queue is closed.
    pub(crate) fn wait(&self, timeout_ms: u32) -> Result<Event> {
        let mut left = msecs_to_jiffies(timeout_ms);
        let mut inner = self.inner.lock();
        loop {
            if inner.closed {
                return Err(ESRCH);
            }
            if !inner.events.is_empty() {
                return inner.events.remove(0).map_err(|_| EINVAL);
            }
            if left == 0 {
                return Err(ENOENT);
            }
            match self.cond.wait_interruptible_timeout(&mut inner, left) {
                CondVarTimeoutResult::Timeout => left = 0,
                CondVarTimeoutResult::Woken { jiffies } => left = jiffies,
                CondVarTimeoutResult::Signal { .. } => return Err(EINTR),
            }
        }
    }
}

/// The time origin of events.
pub(crate) fn epoch() -> Instant<Monotonic> {
    Instant::<Monotonic>::now()
}

#[cfg(CONFIG_BLKSNAP_KUNIT_TEST)]
#[kunit_tests(blksnap_event)]
mod tests {
    use super::*;
    use kernel::{
        new_mutex,
        sync::Arc,
        time::{delay::fsleep, Delta},
        workqueue,
    };

    fn queue() -> Result<Pin<KBox<EventQueue>>> {
        KBox::pin_init(EventQueue::new(), GFP_KERNEL)
    }

    #[test]
    fn events_come_out_in_order() -> Result {
        let q = queue()?;
        let t0 = epoch();
        for code in 0..3u32 {
            q.push(Event::new(&t0, code, &code.to_ne_bytes()));
        }
        assert_eq!(q.len(), 3);
        for code in 0..3u32 {
            let ev = q.wait(0)?;
            assert_eq!(ev.code, code);
            assert_eq!(ev.len, 4);
            assert_eq!(&ev.data[..4], &code.to_ne_bytes());
            assert!(ev.time >= 0);
        }
        Ok(())
    }

    #[test]
    fn timeout_without_events() -> Result {
        let q = queue()?;
        assert_eq!(q.wait(0).err(), Some(ENOENT));
        let t = epoch();
        assert_eq!(q.wait(20).err(), Some(ENOENT));
        // The wait lasted about the timeout (a jiffy less at worst).
        assert!(t.elapsed().as_millis() >= 10);
        Ok(())
    }

    #[test]
    fn closed_queue_wakes_waiters_with_esrch() -> Result {
        let q = Arc::pin_init(EventQueue::new(), GFP_KERNEL)?;
        let t0 = epoch();
        q.push(Event::new(&t0, 7, &[]));
        q.close();
        // Events not read are dropped with the queue's end; later waiters see it closed too.
        assert_eq!(q.wait(1000).err(), Some(ESRCH));
        assert_eq!(q.len(), 0);
        q.push(Event::new(&t0, 8, &[]));
        assert_eq!(q.wait(0).err(), Some(ESRCH));
        Ok(())
    }

    /// Starts `n` work items that each wait once on `q` (up to 5 s) and record what they got:
    /// the event code, or `-errno`.
    fn spawn_waiters(q: &Arc<EventQueue>, n: usize) -> Result<Arc<Mutex<KVec<i64>>>> {
        let got = Arc::pin_init(new_mutex!(KVec::new()), GFP_KERNEL)?;
        for _ in 0..n {
            let (q, got) = (q.clone(), got.clone());
            workqueue::system_unbound().try_spawn(GFP_KERNEL, move || {
                let outcome = match q.wait(5000) {
                    Ok(ev) => i64::from(ev.code),
                    Err(err) => i64::from(err.to_errno()),
                };
                let _ = got.lock().push(outcome, GFP_KERNEL);
            })?;
        }
        Ok(got)
    }

    /// Waits up to 5 s until `got` holds `n` outcomes; returns them, sorted.
    fn outcomes(got: &Mutex<KVec<i64>>, n: usize) -> Result<KVec<i64>> {
        for _ in 0..500 {
            if got.lock().len() >= n {
                break;
            }
            fsleep(Delta::from_millis(10));
        }
        let mut v = KVec::new();
        v.extend_from_slice(&got.lock(), GFP_KERNEL)?;
        // A few values: an insertion sort. `sort_unstable` would bring in core's quicksort, in
        // which objtool reports a fall-through to the next function.
        for i in 1..v.len() {
            let mut j = i;
            while j > 0 && v[j - 1] > v[j] {
                v.swap(j - 1, j);
                j -= 1;
            }
        }
        Ok(v)
    }

    #[test]
    fn each_event_wakes_one_of_several_waiters() -> Result {
        let q = Arc::pin_init(EventQueue::new(), GFP_KERNEL)?;
        let got = spawn_waiters(&q, 2)?;
        // Most likely both are asleep by now; the outcome is the same if not.
        fsleep(Delta::from_millis(50));
        let t0 = epoch();
        q.push(Event::new(&t0, 1, &[]));
        q.push(Event::new(&t0, 2, &[]));
        assert_eq!(&outcomes(&got, 2)?[..], &[1, 2]);
        assert_eq!(q.len(), 0);
        Ok(())
    }

    #[test]
    fn close_wakes_sleeping_waiters() -> Result {
        let q = Arc::pin_init(EventQueue::new(), GFP_KERNEL)?;
        let got = spawn_waiters(&q, 2)?;
        fsleep(Delta::from_millis(50));
        q.close();
        let esrch = i64::from(ESRCH.to_errno());
        assert_eq!(&outcomes(&got, 2)?[..], &[esrch, esrch]);
        Ok(())
    }

    #[test]
    fn long_payloads_are_cut() {
        let t0 = epoch();
        let ev = Event::new(&t0, 1, &[0xab; 40]);
        assert_eq!(ev.len, EVENT_DATA_MAX);
        assert!(ev.data.iter().all(|&b| b == 0xab));
    }
}
