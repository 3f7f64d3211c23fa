//! Ordering one buffer's work across CUDA streams.
//!
//! Work on two streams is not ordered, and cudarc's own tracking is off
//! (kernels and TensorRT take raw pointers). So each device frame and
//! tensor carries a [`Fence`]: the stream that last queued work on it and
//! an event recorded after that work. A stream about to touch the buffer
//! waits on the event on the device (`cuStreamWaitEvent`) when the last
//! work was on another stream, and records the event again after its own
//! work; the host waits on it (`cuEventSynchronize`) before the memory is
//! freed. One event is enough: each user waited for the one before it, so
//! the last event covers every earlier use, reads and writes alike.
//!
//! Plain Rust over [`StreamSync`], so the order is tested on the CPU with a
//! recording fake; the CUDA implementation is in `cuda/stream.rs`.

use crate::error::Result;

/// The three operations a fence needs from a stream.
pub trait StreamSync {
    type Event;
    /// Identity of the stream (its raw handle).
    fn stream_id(&self) -> usize;
    fn new_event(&self) -> Result<Self::Event>;
    /// `cuEventRecord(event, this stream)`.
    fn record(&self, event: &Self::Event) -> Result<()>;
    /// `cuStreamWaitEvent(this stream, event)`: later work on this stream
    /// starts after the work the event was recorded behind.
    fn wait(&self, event: &Self::Event) -> Result<()>;
}

/// The last use of one buffer: which stream, and an event behind it.
#[derive(Debug)]
pub struct Fence<E> {
    last: Option<(usize, E)>,
}

impl<E> Default for Fence<E> {
    fn default() -> Self {
        Fence { last: None }
    }
}

impl<E> Fence<E> {
    /// Before queuing work on `stream`: make it wait for the last use if
    /// that was on another stream.
    pub fn before<S: StreamSync<Event = E>>(&self, stream: &S) -> Result<()> {
        match &self.last {
            Some((id, event)) if *id != stream.stream_id() => stream.wait(event),
            _ => Ok(()),
        }
    }

    /// After queuing work on `stream`: record the event behind it (the
    /// event is created once and re-recorded).
    pub fn after<S: StreamSync<Event = E>>(&mut self, stream: &S) -> Result<()> {
        let event = match self.last.take() {
            Some((_, e)) => e,
            None => stream.new_event()?,
        };
        let recorded = stream.record(&event);
        self.last = Some((stream.stream_id(), event));
        recorded
    }

    /// The event to wait on from the host before the memory is freed or
    /// read on the host; `None` if nothing was ever queued.
    pub fn event(&self) -> Option<&E> {
        self.last.as_ref().map(|(_, e)| e)
    }

    /// The stream of the last use.
    pub fn last_stream(&self) -> Option<usize> {
        self.last.as_ref().map(|(id, _)| *id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// A fake stream that logs what a real one would be asked to do.
    struct Fake {
        id: usize,
        log: Rc<RefCell<Vec<String>>>,
        next_event: Rc<RefCell<usize>>,
    }

    impl StreamSync for Fake {
        type Event = usize;
        fn stream_id(&self) -> usize {
            self.id
        }
        fn new_event(&self) -> Result<usize> {
            let mut n = self.next_event.borrow_mut();
            *n += 1;
            Ok(*n)
        }
        fn record(&self, e: &usize) -> Result<()> {
            self.log
                .borrow_mut()
                .push(format!("s{} record e{e}", self.id));
            Ok(())
        }
        fn wait(&self, e: &usize) -> Result<()> {
            self.log
                .borrow_mut()
                .push(format!("s{} wait e{e}", self.id));
            Ok(())
        }
    }

    fn streams(n: usize) -> (Vec<Fake>, Rc<RefCell<Vec<String>>>) {
        let log = Rc::new(RefCell::new(Vec::new()));
        let ev = Rc::new(RefCell::new(0));
        let s = (1..=n)
            .map(|id| Fake {
                id,
                log: log.clone(),
                next_event: ev.clone(),
            })
            .collect();
        (s, log)
    }

    /// A Y4M upload on the reader's stream, then the pipeline's preprocess
    /// on its own: the preprocess stream waits for the upload's event.
    #[test]
    fn upload_then_preprocess_on_another_stream_waits() {
        let (s, log) = streams(2);
        let mut f: Fence<usize> = Fence::default();
        f.before(&s[0]).unwrap();
        log.borrow_mut().push("s1 upload".into());
        f.after(&s[0]).unwrap();
        f.before(&s[1]).unwrap();
        log.borrow_mut().push("s2 preprocess".into());
        f.after(&s[1]).unwrap();
        assert_eq!(
            *log.borrow(),
            [
                "s1 upload",
                "s1 record e1",
                "s2 wait e1",
                "s2 preprocess",
                "s2 record e1"
            ]
        );
        assert_eq!(f.last_stream(), Some(2));
    }

    /// Same stream: stream order suffices, no wait.
    #[test]
    fn same_stream_needs_no_wait() {
        let (s, log) = streams(1);
        let mut f: Fence<usize> = Fence::default();
        for _ in 0..3 {
            f.before(&s[0]).unwrap();
            f.after(&s[0]).unwrap();
        }
        assert!(log.borrow().iter().all(|l| !l.contains("wait")));
    }

    /// NVDEC output -> pipeline (preprocess, censor) -> back to NVDEC's
    /// pool and overwritten: each change of stream waits, so the decoder
    /// cannot overwrite a frame the censor kernel still writes.
    #[test]
    fn every_change_of_stream_waits_for_the_last_use() {
        let (s, log) = streams(2);
        let mut f: Fence<usize> = Fence::default();
        let order = [0, 1, 1, 0];
        for &i in &order {
            f.before(&s[i]).unwrap();
            f.after(&s[i]).unwrap();
        }
        let waits: Vec<String> = log
            .borrow()
            .iter()
            .filter(|l| l.contains("wait"))
            .cloned()
            .collect();
        assert_eq!(waits, ["s2 wait e1", "s1 wait e1"]);
    }

    /// Never used: nothing to wait for before freeing; used: the event.
    #[test]
    fn freeing_waits_only_after_use() {
        let (s, _) = streams(1);
        let mut f: Fence<usize> = Fence::default();
        assert!(f.event().is_none());
        f.after(&s[0]).unwrap();
        assert_eq!(f.event(), Some(&1));
    }
}
