//! The line MongoDB publishes wait in, and which orders the publishes further back will write.
//!
//! Publishes go out one at a time in the order their batches were committed. A CDC source has
//! four topics, and a change to an order and the changes to its items arrive on two of them, so
//! two publishes queued one behind the other often carry the same orders. The later one holds
//! them at a newer version of `gold/order_totals` (batches commit in line order), so the earlier
//! one can leave them out: MongoDB's version guard would keep the later documents anyway, and on
//! SecantusDB rewriting a document costs six times inserting it.
//!
//! Leaving them out is safe because the later publish's orders are those its own batch touched:
//! if it fails, is cut short or the process dies first, its topic's MongoDB position has not
//! moved past that batch, and the catch-up republishes the same orders from the lake, at least as
//! new.
//!
//! A batch that spans several topics hands over one publish per topic, one after the other as
//! each topic's lake work ends. Left alone, the first would be writing before the next is in
//! line, and an order both touch would be written twice. So the batch loop holds the line
//! ([`Queue::hold`]) while it works through the topics: publishes handed over meanwhile take their
//! places but start only once the hold ends, when every publish of the batch is in line and each
//! can leave out what the ones behind it write.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, watch};

/// The orders of each publish queued and not yet ended, by place in line.
type Waiting = Arc<Mutex<BTreeMap<u64, Arc<HashSet<String>>>>>;

/// Publishes in line, in the order they were queued.
#[derive(Default)]
pub struct Queue {
    /// The end of the last publish queued, and the next place in line.
    last: Mutex<(Option<oneshot::Receiver<()>>, u64)>,
    waiting: Waiting,
    /// The gate of the current (or last) hold.
    gate: Mutex<Option<Gate>>,
}

/// Publishes handed over during a hold wait at it until it opens. Opening is for good.
#[derive(Clone)]
pub struct Gate(Arc<watch::Sender<bool>>);

impl Gate {
    fn new() -> Gate {
        Gate(Arc::new(watch::channel(false).0))
    }

    pub fn open(&self) {
        self.0.send_replace(true);
    }

    fn is_open(&self) -> bool {
        *self.0.borrow()
    }

    async fn opened(&self) {
        // The sender lives in `self`, so the channel cannot close under the wait.
        let _ = self.0.subscribe().wait_for(|open| *open).await;
    }
}

/// Holds the line while it lives: dropped (however the batch ends, an error included), it opens
/// the gate.
pub struct Hold(Gate);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.open();
    }
}

impl Queue {
    /// Takes the next turn for a publish that writes the documents of `orders` (ids): call it
    /// before spawning the publish (in batch order) and [`Turn::wait`] before the first write.
    pub fn turn(&self, orders: HashSet<String>) -> Turn {
        let (done, end) = oneshot::channel();
        let mut last = self.last.lock().expect("queue lock");
        let place = last.1;
        last.1 += 1;
        if !orders.is_empty() {
            self.waiting.lock().expect("queue lock").insert(place, Arc::new(orders));
        }
        let previous = last.0.replace(end);
        let gate = self.gate.lock().expect("queue lock").clone().filter(|g| !g.is_open());
        Turn { previous, done: Some(done), place, waiting: Arc::clone(&self.waiting), gate }
    }

    /// Holds back the publishes handed over from now until the returned [`Hold`] is dropped.
    /// Whoever has to wait for one of them meanwhile opens its gate first ([`Turn::gate`]).
    pub fn hold(&self) -> Hold {
        let gate = Gate::new();
        if let Some(old) = self.gate.lock().expect("queue lock").replace(gate.clone()) {
            old.open();
        }
        Hold(gate)
    }
}

/// A publish's place in line: it writes only once every publish queued before it has ended.
/// Publishes of different topics run in the background side by side; were they to interleave, an
/// older publish could write an order's document after a newer one deleted it (a deleted
/// document leaves no `_v` to guard against), bringing it back.
pub struct Turn {
    previous: Option<oneshot::Receiver<()>>,
    /// Dropped when this publish ends, however it ends: that lets the next one go.
    done: Option<oneshot::Sender<()>>,
    place: u64,
    waiting: Waiting,
    /// Set when it was queued during a hold.
    gate: Option<Gate>,
}

impl Turn {
    /// Waits until every publish queued before this one has ended, and its hold (if any) is over.
    pub async fn wait(&mut self) {
        if let Some(previous) = self.previous.take() {
            let _ = previous.await;
        }
        if let Some(gate) = &self.gate {
            gate.opened().await;
        }
    }

    /// The gate this publish waits at: whoever waits for the publish to end must open it first,
    /// or wait for the hold's end, which may be waiting for them.
    pub fn gate(&self) -> Option<Gate> {
        self.gate.clone()
    }

    /// The orders that publishes queued behind this one will write, each set as one of them
    /// holds it. Asked once this publish's turn has come, so none of them has written yet.
    pub fn written_later(&self) -> Vec<Arc<HashSet<String>>> {
        let waiting = self.waiting.lock().expect("queue lock");
        waiting.range(self.place + 1..).map(|(_, o)| Arc::clone(o)).collect()
    }
}

impl Drop for Turn {
    /// A turn given up before its wait (its task cancelled) still lets the next publish go only
    /// after the ones before it.
    fn drop(&mut self) {
        self.waiting.lock().expect("queue lock").remove(&self.place);
        if let (Some(previous), Some(done)) = (self.previous.take(), self.done.take())
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = previous.await;
                drop(done);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(s: &[&str]) -> HashSet<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn a_turn_sees_the_orders_of_the_publishes_queued_behind_it_until_they_end() {
        let q = Queue::default();
        let mut first = q.turn(ids(&["1", "2"]));
        let second = q.turn(ids(&["2", "3"]));
        let empty = q.turn(HashSet::new());
        let third = q.turn(ids(&["4"]));
        first.wait().await;
        let later: Vec<_> = first.written_later().iter().map(|s| s.as_ref().clone()).collect();
        assert_eq!(later, vec![ids(&["2", "3"]), ids(&["4"])], "in line order, the empty one left out");
        assert_eq!(second.written_later().len(), 1, "only those behind it");
        assert!(third.written_later().is_empty());
        // One that ends (or is given up) no longer counts.
        drop(third);
        assert_eq!(first.written_later().len(), 1);
        drop(empty);
        // Queued after: seen too, as long as the first has not ended.
        let fourth = q.turn(ids(&["5"]));
        assert_eq!(first.written_later().len(), 2);
        drop((first, second, fourth));
        assert!(q.waiting.lock().unwrap().is_empty());
    }

    /// Publishes queued in order write in order, however long each takes, and one that ends
    /// early (failed, or its task dropped) lets the next go.
    #[tokio::test]
    async fn publishes_write_in_the_order_they_were_queued() {
        let (queue, written) = (Queue::default(), Arc::new(Mutex::new(Vec::new())));
        let mut tasks = Vec::new();
        for (i, ms) in [(0, 120u64), (1, 60), (2, 0), (3, 30)] {
            let mut turn = queue.turn(HashSet::new());
            let written = Arc::clone(&written);
            tasks.push(tokio::spawn(async move {
                turn.wait().await;
                if i == 1 {
                    return; // ends without writing
                }
                written.lock().unwrap().push((i, "start"));
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                written.lock().unwrap().push((i, "end"));
            }));
        }
        let never = queue.turn(HashSet::new());
        drop(never); // a publish that was never spawned
        let mut last = queue.turn(HashSet::new());
        let done = Arc::clone(&written);
        tasks.push(tokio::spawn(async move {
            last.wait().await;
            done.lock().unwrap().push((9, "start"));
        }));
        for t in tasks {
            t.await.unwrap();
        }
        let want = [(0, "start"), (0, "end"), (2, "start"), (2, "end"), (3, "start"), (3, "end"), (9, "start")];
        assert_eq!(*written.lock().unwrap(), want);
    }

    /// During a hold publishes take their places but none starts; when it ends they go in line,
    /// the first seeing the orders of those behind it. Opening one's gate (someone waits for it)
    /// lets the whole held line go, and publishes queued after the hold are not held.
    #[tokio::test]
    async fn publishes_queued_during_a_hold_start_when_it_ends() {
        let q = Queue::default();
        let short = std::time::Duration::from_millis(50);
        let hold = q.hold();
        let mut orders = q.turn(ids(&["1", "2"]));
        let mut items = q.turn(ids(&["2"]));
        assert!(orders.gate().is_some() && items.gate().is_some());
        assert!(tokio::time::timeout(short, orders.wait()).await.is_err(), "held while the batch goes on");
        drop(hold);
        orders.wait().await;
        assert_eq!(orders.written_later(), vec![Arc::new(ids(&["2"]))]);
        drop(orders);
        items.wait().await;
        drop(items);

        let _hold = q.hold();
        let mut first = q.turn(HashSet::new());
        let mut second = q.turn(HashSet::new());
        second.gate().expect("held").open();
        tokio::time::timeout(short, first.wait()).await.expect("the gate is the whole hold's");
        drop(first);
        tokio::time::timeout(short, second.wait()).await.expect("open for good");
        drop(second);
        let mut after = q.turn(HashSet::new());
        assert!(after.gate().is_none(), "the hold's gate is open: later publishes are not held");
        tokio::time::timeout(short, after.wait()).await.expect("not held");
    }
}
