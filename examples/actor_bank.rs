//! Accounts as actors: concurrent transfers from several processes, one account's process
//! SIGKILLed mid-run and restarted by its policy, and the bank's total checked at the end.
//!
//! Each `Account` keeps its balance in memory and, before it answers, in a small file (as a Ray
//! actor checkpoints to external storage): the restart policy re-creates the state from the value
//! the actor was spawned with, which names the file, so a restarted account reloads what it had.
//! A call in flight when the account dies fails with `Error::ProcessDied`; the caller cannot
//! know whether it took effect, so every withdrawal and deposit carries a transfer id and an
//! account applies each id once: the caller just retries.
//!
//! Run with `cargo run --release --example actor_bank`.

use multiprocessing::{actor, entry, process_main, Error, Process, Restart};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

const ACCOUNTS: usize = 4;
const OPENING: u64 = 1_000;
const WORKERS: u64 = 4;
const TRANSFERS: u64 = 400;

#[derive(Debug, Serialize, Deserialize)]
struct Account {
    /// Where the balance and the applied transfer ids are kept.
    store: PathBuf,
    /// Loaded from `store` on first use (so also after a restart).
    #[serde(skip)]
    book: Option<Book>,
}

#[derive(Debug, Default)]
struct Book {
    balance: u64,
    applied: HashSet<u64>,
}

#[actor]
impl Account {
    /// Takes `amount` out unless that would overdraw; `true` if it did. Idempotent per `id`.
    pub(crate) fn withdraw(&mut self, id: u64, amount: u64) -> bool {
        let book = self.book();
        if book.applied.contains(&id) {
            return true;
        }
        if book.balance < amount {
            return false;
        }
        book.balance -= amount;
        book.applied.insert(id);
        self.save();
        true
    }

    /// Puts `amount` in. Idempotent per `id`.
    pub(crate) fn deposit(&mut self, id: u64, amount: u64) {
        let book = self.book();
        if book.applied.insert(id) {
            book.balance += amount;
            self.save();
        }
    }

    pub(crate) fn balance(&mut self) -> u64 {
        self.book().balance
    }

    #[actor(skip)]
    pub(crate) fn open(store: PathBuf, balance: u64) -> std::io::Result<Account> {
        std::fs::write(&store, format!("{balance}\n"))?;
        Ok(Account { store, book: None })
    }

    fn book(&mut self) -> &mut Book {
        let store = &self.store;
        self.book.get_or_insert_with(|| {
            let text = std::fs::read_to_string(store).expect("the account's store is readable");
            let mut lines = text.lines();
            let balance = lines.next().and_then(|l| l.parse().ok()).unwrap_or(0);
            let applied = lines.filter_map(|l| l.parse().ok()).collect();
            Book { balance, applied }
        })
    }

    /// Writes the book, replacing the file in one step: a kill leaves the old or the new one.
    fn save(&self) {
        let Some(book) = &self.book else { return };
        let mut text = format!("{}\n", book.balance);
        for id in &book.applied {
            text.push_str(&format!("{id}\n"));
        }
        let tmp = self.store.with_extension("new");
        std::fs::write(&tmp, text).expect("write the account's store");
        std::fs::rename(&tmp, &self.store).expect("replace the account's store");
    }
}

/// Retries a call that hit a dying account: the restarted account serves the retry.
async fn retry<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = multiprocessing::Result<T>>,
{
    loop {
        match call().await {
            Ok(v) => return v,
            Err(Error::ProcessDied { .. }) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("transfer failed: {e}"),
        }
    }
}

/// One worker process: `TRANSFERS` transfers between pseudo-random accounts.
#[entry]
async fn transfers(accounts: Vec<AccountRef>, worker: u64) -> u64 {
    let mut done = 0;
    let mut seed = worker.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in 0..TRANSFERS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let from = (seed % ACCOUNTS as u64) as usize;
        let to = (from + 1 + (seed >> 8) as usize % (ACCOUNTS - 1)) % ACCOUNTS;
        let amount = 1 + (seed >> 16) % 50;
        let id = worker * 1_000_000 + i;
        if retry(|| accounts[from].withdraw(id, amount)).await {
            retry(|| accounts[to].deposit(id, amount)).await;
            done += 1;
        }
    }
    done
}

#[process_main]
async fn main() -> multiprocessing::Result<()> {
    let dir = std::env::temp_dir().join(format!("actor-bank-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let restart = Restart::OnCrash {
        max_restarts: 3,
        within: Duration::from_secs(60),
    };
    let mut accounts = Vec::new();
    for n in 0..ACCOUNTS {
        let account = Account::open(dir.join(format!("account-{n}")), OPENING)?;
        accounts.push(account.builder().restart(restart).spawn().await?);
    }
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        workers.push(Process::spawn(transfers, (accounts.clone(), w)).await?);
    }
    // Mid-run, account 2's process is killed outright.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let victim = accounts[2].pid().expect("connected");
    // SAFETY: sends SIGKILL to the account's process, a child this program started.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    println!("killed account 2 (pid {victim})");
    let mut done = 0;
    for w in workers {
        done += w.join().await?;
    }
    let mut total = 0;
    for (n, account) in accounts.iter().enumerate() {
        let balance = account.balance().await?;
        println!("account {n}: {balance} (pid {:?})", account.pid());
        total += balance;
    }
    println!("{done} transfers; total {total}");
    assert_eq!(total, OPENING * ACCOUNTS as u64, "money was made or lost");
    assert_ne!(accounts[2].pid(), Some(victim), "account 2 was restarted");
    for account in &accounts {
        account.stop().await?;
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
