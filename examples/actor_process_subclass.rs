//! The seed's "subclass `Process` and override `run()`" pattern (see `process_subclass.rs` for
//! the Python original and its direct port), written as an actor instead:
//!
//! ```python
//! class Worker(Process):
//!     def __init__(self, label, numbers, **kwargs):
//!         super().__init__(**kwargs)
//!         self.label = label
//!         self.numbers = numbers
//!
//!     def run(self):
//!         print(f'{self.name} (pid {os.getpid()}): label={self.label!r}, numbers={self.numbers}')
//!         total = sum(self.numbers)
//!         print(f'{self.name}: sum = {total}')
//! ```
//!
//! A `Process` runs `run` once and exits. As an actor the "subclass" is a process that keeps its
//! state: the `on_start` hook prints what Python's `run` prints first, `run` can be called as
//! often as wanted (here after `extend` changed the numbers in the child), and `stop` hands the
//! final state back to the parent. The actor's name (`.name("worker-2")`) registers it in the
//! run, so any process can `lookup` it.
//!
//! Run with `cargo run --release --example actor_process_subclass`.

use multiprocessing::{actor, current_process, process_main};
use serde::{Deserialize, Serialize};

/// The state of the "subclass", living in the actor's process.
#[derive(Debug, Serialize, Deserialize)]
struct Worker {
    label: String,
    numbers: Vec<u64>,
}

#[actor]
impl Worker {
    #[actor(on_start)]
    fn started(&self) {
        let me = current_process();
        println!(
            "{} (pid {}): label={:?}, numbers={:?}",
            me.name, me.pid, self.label, self.numbers
        );
    }

    /// Python's `run`: the sum, printed in the actor's process and returned to the caller.
    pub(crate) fn run(&self) -> u64 {
        let total = self.numbers.iter().sum();
        println!("{}: sum = {total}", current_process().name);
        total
    }

    /// Adds numbers to the state kept in the actor's process.
    pub(crate) fn extend(&mut self, more: Vec<u64>) {
        self.numbers.extend(more);
    }
}

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    let w = Worker {
        label: "first".into(),
        numbers: vec![1, 2, 3],
    }
    .spawn()
    .await?;
    let total = w.run().await?;
    println!("parent: first returned {total}");
    // The state stayed in the child: change it there and run again.
    w.extend(vec![4]).await?;
    let again = w.run().await?;
    let state = w.stop().await?;
    println!(
        "parent: first returned {again}, final numbers {:?}",
        state.numbers
    );
    assert_eq!((total, again), (6, 10));

    // Python's `Worker(..., name='worker-2')`: a registered name, found again by `lookup`.
    let mut others = Vec::new();
    for i in [2_u64, 3] {
        let w = Worker {
            label: format!("job {i}"),
            numbers: (0..i * 10).collect(),
        }
        .builder()
        .name(format!("worker-{i}"))
        .spawn()
        .await?;
        others.push(w);
    }
    for i in [2_u64, 3] {
        let w = WorkerRef::lookup(&format!("worker-{i}")).await?;
        let total = w.run().await?;
        println!("parent: worker-{i} returned {total}");
        assert_eq!(total, (0..i * 10).sum::<u64>());
    }
    for w in others {
        w.stop().await?;
    }
    Ok(())
}
