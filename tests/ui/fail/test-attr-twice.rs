// #[multiprocessing::test] already emits #[test]; a second one would register the test twice.

#[multiprocessing::test]
#[test]
async fn spawns_a_child() {}

fn main() {}
