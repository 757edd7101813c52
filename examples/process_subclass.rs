//! Port of Python's "subclass `Process` and override `run()`" pattern:
//!
//! ```python
//! from multiprocessing import Process
//! import os
//!
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
//!
//! if __name__ == '__main__':
//!     w = Worker('first', [1, 2, 3])
//!     w.start()
//!     w.join()
//!     others = [Worker(f'job {i}', list(range(i * 10)), name=f'worker-{i}') for i in (2, 3)]
//!     for w in others: w.start()
//!     for w in others: w.join()
//! ```
//!
//! The subclass becomes a serde struct implementing [`multiprocessing::Run`], registered with
//! `#[entry]` on its `impl Run for Worker` block. The value travels to the child, which calls
//! `run`; unlike Python's `run`, it returns a value, and `join` hands that value to the parent.
//!
//! Run with `cargo run --release --example process_subclass`.

use multiprocessing::{current_process, entry, process_main, Process, Run};
use serde::{Deserialize, Serialize};

/// The state of the "subclass": everything `run` needs, sent to the child by value.
#[derive(Debug, Serialize, Deserialize)]
struct Worker {
    label: String,
    numbers: Vec<u64>,
}

#[entry]
impl Run for Worker {
    type Output = u64;

    fn run(self) -> u64 {
        let me = current_process();
        println!(
            "{} (pid {}): label={:?}, numbers={:?}",
            me.name, me.pid, self.label, self.numbers
        );
        let total = self.numbers.iter().sum();
        println!("{}: sum = {total}", me.name);
        total
    }
}

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    let w = Process::spawn_run(Worker {
        label: "first".into(),
        numbers: vec![1, 2, 3],
    })
    .await?;
    let total = w.join().await?;
    println!(
        "parent: {} returned {total}, exit code {:?}",
        w.name(),
        w.exitcode()
    );

    // Python's `Worker(..., name='worker-2')`: the name goes on the builder.
    let mut others = Vec::new();
    for i in [2_u64, 3] {
        let p = Process::builder()
            .name(format!("worker-{i}"))
            .spawn_run(Worker {
                label: format!("job {i}"),
                numbers: (0..i * 10).collect(),
            })
            .await?;
        others.push(p);
    }
    for p in &others {
        let total = p.join().await?;
        println!(
            "parent: {} returned {total}, exit code {:?}",
            p.name(),
            p.exitcode()
        );
    }
    Ok(())
}
