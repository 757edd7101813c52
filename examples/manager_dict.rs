//! Port of the `Manager` example from Python's `multiprocessing` docs:
//!
//! ```python
//! from multiprocessing import Process, Manager
//!
//! def f(d, l):
//!     d[1] = '1'
//!     d['2'] = 2
//!     d[0.25] = None
//!     l.reverse()
//!
//! if __name__ == '__main__':
//!     with Manager() as manager:
//!         d = manager.dict()
//!         l = manager.list(range(10))
//!
//!         p = Process(target=f, args=(d, l))
//!         p.start()
//!         p.join()
//!
//!         print(d)
//!         print(l)
//! ```
//!
//! which prints
//!
//! ```text
//! {1: '1', '2': 2, 0.25: None}
//! [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
//! ```
//!
//! Python's dict takes keys and values of any type; here the mixed types are a serde enum each
//! (`Key`, `Value`), printed as Python's `repr` prints them. The dict and the list live in the
//! main process (its hub hosts them); the proxies are entry arguments, as in Python. (The
//! formatters below write to `out`, not `f`: the entry `f` is a unit struct, which no binding in
//! this module may shadow.)
//!
//! Run with `cargo run --release --example manager_dict`.

use multiprocessing::{entry, process_main, Dict, List, Manager, Process};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A key of the mixed-type dict.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Key {
    Int(i64),
    Str(String),
    Float(f64),
}

/// A value of the mixed-type dict.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Value {
    None,
    Int(i64),
    Str(String),
}

/// Python's `repr` of a string: single quotes.
fn repr_str(out: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    write!(out, "'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl fmt::Display for Key {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Int(i) => write!(out, "{i}"),
            Key::Str(s) => repr_str(out, s),
            Key::Float(x) => write!(out, "{x:?}"),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::None => write!(out, "None"),
            Value::Int(i) => write!(out, "{i}"),
            Value::Str(s) => repr_str(out, s),
        }
    }
}

#[entry]
async fn f(d: Dict<Key, Value>, l: List<i64>) -> multiprocessing::Result<()> {
    d.set(Key::Int(1), Value::Str("1".into())).await?;
    d.set(Key::Str("2".into()), Value::Int(2)).await?;
    d.set(Key::Float(0.25), Value::None).await?;
    l.reverse().await
}

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    let manager = Manager::start().await?;
    let d = manager.dict::<Key, Value>();
    let l = manager.list::<i64>();
    l.extend(0..10).await?;

    let p = Process::spawn(f, (d.clone(), l.clone())).await?;
    p.join().await??;

    let items: Vec<String> = d
        .items()
        .await?
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    println!("{{{}}}", items.join(", "));
    println!("{:?}", l.to_vec().await?);
    Ok(())
}
