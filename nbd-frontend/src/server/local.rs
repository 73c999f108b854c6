//! The single-thread counterparts of the tokio primitives the transmission phase used: a
//! budget of request slots and payload bytes, and the reply queue to the writer.
//!
//! Everything of a connection runs on the server's one tokio-uring thread, so neither needs
//! atomics, an `Arc` or a lock: `tokio::sync::Semaphore` took and gave back two permits per
//! request (its release always locks the waiter list) and the unbounded `mpsc` channel paid
//! atomics per send and receive — per 4 KiB write a measurable share of the Primary's user
//! time (issue 20). Both here have exactly one waiter (the connection's reader for the budget,
//! its writer for the queue), so one stored waker is all the waiting there is.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// Slots and bytes a connection may hold at once; one task acquires, anyone releases.
pub(super) struct Budget {
    slots: Cell<usize>,
    bytes: Cell<usize>,
    waiter: Cell<Option<Waker>>,
}

/// What one request holds of the budget, given back when it is dropped.
pub(super) struct Held {
    budget: Rc<Budget>,
    slots: usize,
    bytes: usize,
}

impl Budget {
    pub(super) fn new(slots: usize, bytes: usize) -> Rc<Budget> {
        Rc::new(Budget {
            slots: Cell::new(slots),
            bytes: Cell::new(bytes),
            waiter: Cell::new(None),
        })
    }

    /// Whether `slots` and `bytes` are free now (taking them would not wait).
    pub(super) fn has_room(&self, slots: usize, bytes: usize) -> bool {
        self.slots.get() >= slots && self.bytes.get() >= bytes
    }

    /// One slot, once one is free.
    pub(super) async fn slot(self: &Rc<Self>) -> Held {
        self.wait_for(1, 0).await;
        Held {
            budget: Rc::clone(self),
            slots: 1,
            bytes: 0,
        }
    }

    /// `bytes` more for `held`, once they are free. `bytes` must not exceed the budget's total
    /// (the caller caps it), or this waits for ever.
    pub(super) async fn add_bytes(&self, held: &mut Held, bytes: usize) {
        self.wait_for(0, bytes).await;
        held.bytes += bytes;
    }

    /// Waits until `slots` and `bytes` are free and takes them (in the same poll, so a wait
    /// dropped half-way has taken nothing).
    async fn wait_for(&self, slots: usize, bytes: usize) {
        poll_fn(|cx| {
            if self.has_room(slots, bytes) {
                self.slots.set(self.slots.get() - slots);
                self.bytes.set(self.bytes.get() - bytes);
                Poll::Ready(())
            } else {
                self.waiter.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
    }

    fn give_back(&self, slots: usize, bytes: usize) {
        self.slots.set(self.slots.get() + slots);
        self.bytes.set(self.bytes.get() + bytes);
        if let Some(w) = self.waiter.take() {
            w.wake();
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.give_back(self.slots, self.bytes);
    }
}

/// The replies of one connection on their way to its writer, in the order they completed.
pub(super) struct Queue<T> {
    items: RefCell<VecDeque<T>>,
    /// Senders alive: the writer's `recv` ends once they are all gone and the queue is empty.
    senders: Cell<usize>,
    /// The receiver is gone (the writer failed): what is sent now is dropped at once.
    closed: Cell<bool>,
    waiter: Cell<Option<Waker>>,
}

/// A handle that sends into a [`Queue`]; clones count as senders.
pub(super) struct Sender<T> {
    queue: Rc<Queue<T>>,
}

/// The writer's end of a [`Queue`]; dropping it closes the queue.
pub(super) struct Receiver<T> {
    queue: Rc<Queue<T>>,
}

pub(super) fn queue<T>() -> (Sender<T>, Receiver<T>) {
    let queue = Rc::new(Queue {
        items: RefCell::new(VecDeque::new()),
        senders: Cell::new(1),
        closed: Cell::new(false),
        waiter: Cell::new(None),
    });
    (
        Sender {
            queue: Rc::clone(&queue),
        },
        Receiver { queue },
    )
}

impl<T> Queue<T> {
    fn wake(&self) {
        if let Some(w) = self.waiter.take() {
            w.wake();
        }
    }
}

impl<T> Sender<T> {
    /// Queues `item`, or drops it if the receiver is gone.
    pub(super) fn send(&self, item: T) {
        if self.queue.closed.get() {
            return;
        }
        self.queue.items.borrow_mut().push_back(item);
        self.queue.wake();
    }

    /// Whether the receiver is gone.
    pub(super) fn is_closed(&self) -> bool {
        self.queue.closed.get()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.queue.senders.set(self.queue.senders.get() + 1);
        Sender {
            queue: Rc::clone(&self.queue),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let left = self.queue.senders.get() - 1;
        self.queue.senders.set(left);
        if left == 0 {
            self.queue.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// The next item, waiting for one; `None` once every sender is gone and nothing is left.
    pub(super) async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| {
            if let Some(item) = self.try_recv() {
                return Poll::Ready(Some(item));
            }
            if self.queue.senders.get() == 0 {
                return Poll::Ready(None);
            }
            self.queue.waiter.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    /// The next item if one is queued.
    pub(super) fn try_recv(&mut self) -> Option<T> {
        self.queue.items.borrow_mut().pop_front()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.queue.closed.set(true);
        // Dropped outside the borrow: dropping an item may give back budget and wake the
        // reader, which must not find the queue borrowed.
        let left = std::mem::take(&mut *self.queue.items.borrow_mut());
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Wake};

    /// Counts wake-ups, to see who was woken when.
    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    fn waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(Default::default()));
        (Arc::clone(&c), Waker::from(c))
    }
    fn woken(c: &Count) -> usize {
        c.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Goal: the budget never hands out more slots or bytes than it has, a waiting acquire
    /// is woken when a request gives its share back, and every `Held` gives back exactly
    /// what it took (also when the wait was abandoned half-way).
    #[test]
    fn budget_blocks_at_its_limits_and_gets_everything_back() {
        let b = Budget::new(2, 100);
        let (count, w) = waker();
        let mut cx = Context::from_waker(&w);
        let ready = |f: std::pin::Pin<&mut dyn Future<Output = Held>>, cx: &mut Context<'_>| match f
            .poll(cx)
        {
            Poll::Ready(h) => Some(h),
            Poll::Pending => None,
        };
        let mut h1 = ready(pin!(b.slot()), &mut cx).expect("first slot");
        let h2 = ready(pin!(b.slot()), &mut cx).expect("second slot");
        let mut third = Box::pin(b.slot());
        assert!(ready(third.as_mut(), &mut cx).is_none(), "only two slots");
        assert_eq!(woken(&count), 0);
        drop(h2);
        assert_eq!(woken(&count), 1, "a freed slot wakes the waiting reader");
        let h3 = ready(third.as_mut(), &mut cx).expect("the freed slot");

        // Bytes: 60 of 100 taken, 50 more must wait; a wait dropped before it is served
        // takes nothing.
        assert!(pin!(b.add_bytes(&mut h1, 60)).poll(&mut cx).is_ready());
        let mut h3 = h3;
        {
            let mut more = pin!(b.add_bytes(&mut h3, 50));
            assert!(more.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(b.bytes.get(), 40, "the abandoned wait took nothing");
        drop(h1);
        assert_eq!(
            (b.slots.get(), b.bytes.get()),
            (1, 100),
            "slot and bytes back"
        );
        assert!(pin!(b.add_bytes(&mut h3, 100)).poll(&mut cx).is_ready());
        drop(h3);
        assert_eq!(
            (b.slots.get(), b.bytes.get()),
            (2, 100),
            "all back, nothing twice"
        );
        assert_eq!(Rc::strong_count(&b), 1, "no claim left holding the budget");
    }

    /// Goal: the queue keeps order, wakes the waiting receiver on a send and when the last
    /// sender goes, ends only once it is empty and senderless, and once the receiver is
    /// gone drops what is queued or sent (so that the budget those items hold comes back).
    #[test]
    fn queue_order_wake_ups_end_and_close() {
        let (tx, mut rx) = queue::<u32>();
        let (count, w) = waker();
        let mut cx = Context::from_waker(&w);
        {
            let mut next = pin!(rx.recv());
            assert!(next.as_mut().poll(&mut cx).is_pending());
            tx.send(1);
            assert_eq!(woken(&count), 1, "a send wakes the receiver");
            assert_eq!(next.as_mut().poll(&mut cx), Poll::Ready(Some(1)));
        }
        let tx2 = tx.clone();
        tx.send(2);
        tx2.send(3);
        drop(tx);
        assert_eq!(rx.try_recv(), Some(2));
        {
            let mut next = pin!(rx.recv());
            assert_eq!(next.as_mut().poll(&mut cx), Poll::Ready(Some(3)));
        }
        {
            let mut next = pin!(rx.recv());
            assert!(next.as_mut().poll(&mut cx).is_pending(), "a sender is left");
            let before = woken(&count);
            drop(tx2);
            assert_eq!(
                woken(&count),
                before + 1,
                "the last sender's going wakes it"
            );
            assert_eq!(next.as_mut().poll(&mut cx), Poll::Ready(None));
        }

        let b = Budget::new(4, 0);
        let (tx, rx) = queue::<Held>();
        let held = pin!(b.slot()).poll(&mut cx);
        let Poll::Ready(held) = held else {
            panic!("a free slot")
        };
        tx.send(held);
        assert!(!tx.is_closed());
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(
            b.slots.get(),
            4,
            "the queued item was dropped with the receiver"
        );
        let Poll::Ready(held) = pin!(b.slot()).poll(&mut cx) else {
            panic!("a free slot")
        };
        tx.send(held);
        assert_eq!(b.slots.get(), 4, "sent after the close: dropped at once");
    }
}
