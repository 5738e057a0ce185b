//! Python jobs in outboard-scripts-host worker processes: results, every
//! error case with its file and line, reloads, worker death, results by id
//! with many jobs in flight, jobs spread over the workers, and the pool
//! used from other threads.

use std::time::Duration;

use outboard_engine::wire::control::JobRequest;
use outboard_engine::workers::pool::WorkerPool;
use outboard_tests::{ScriptDir, scripts_host};
use serde_json::{Value, json};

fn pool(ncpus: usize) -> WorkerPool {
    WorkerPool::new(scripts_host(), ncpus).expect("start workers")
}

fn run(
    pool: &WorkerPool,
    file: &str,
    function: &str,
    args: Vec<Value>,
) -> Result<Value, outboard_engine::wire::control::JobError> {
    let ticket = pool.submit(JobRequest::new(file, function, args));
    pool.wait(ticket)
}

const WHO: &str = "import os, time\n\ndef who(delay):\n    time.sleep(delay)\n    return os.getpid()\n\ndef add(a, b):\n    return a + b\n";

#[test]
fn jobs_run_in_separate_worker_processes_in_parallel() {
    let dir = ScriptDir::new("parallel");
    let script = dir.write("who.py", WHO);
    let pool = pool(2);
    assert_eq!(run(&pool, &script, "add", vec![json!(2), json!(40)]).unwrap(), json!(42));
    // Four slow jobs: with two workers, both processes must take some.
    let tickets: Vec<_> = (0..4).map(|_| pool.submit(JobRequest::new(&script, "who", vec![json!(0.2)]))).collect();
    let mut pids: Vec<u64> = tickets.into_iter().map(|t| pool.wait(t).unwrap().as_u64().unwrap()).collect();
    pids.sort();
    pids.dedup();
    let mut expected: Vec<u64> = pool.pids().into_iter().map(u64::from).collect();
    expected.sort();
    assert_eq!(pids, expected, "each worker process ran jobs");
    assert!(!pids.contains(&u64::from(std::process::id())));
    let stats = pool.stats();
    assert_eq!(stats.total_jobs(), 5);
    assert!(stats.to_string().contains("job count | % of all jobs"));
}

#[test]
fn every_python_error_names_file_and_line_and_the_worker_keeps_serving() {
    let dir = ScriptDir::new("errors");
    let good = dir.write("good.py", WHO);
    let raises = dir.write("raises.py", "def helper(x):\n    return 1 / x\n\ndef divide(x):\n    return helper(x)\n");
    let syntax = dir.write("syntax.py", "x = 1\n\ndef broken(:\n    pass\n");
    let returns_set = dir.write("set.py", "def f():\n    return {1, 2}\n");
    let not_a_function = dir.write("attr.py", "f = 3\n");
    let exits = dir.write("exits.py", "import sys\n\ndef f():\n    sys.exit(3)\n");
    let missing = dir.path().join("nowhere.py").to_str().unwrap().to_string();
    let pool = pool(1);
    let pid = pool.pids()[0];

    let e = run(&pool, &raises, "divide", vec![json!(0)]).unwrap_err();
    assert_eq!(e.kind, "ZeroDivisionError");
    assert_eq!((e.file.as_deref(), e.line), (Some(raises.as_str()), Some(2)), "innermost frame in the script");
    assert!(e.traceback.contains("Traceback") && e.traceback.contains("line 5"), "{}", e.traceback);
    assert!(e.to_string().starts_with(&format!("{raises}:2: ZeroDivisionError")), "{e}");

    let e = run(&pool, &syntax, "broken", vec![]).unwrap_err();
    assert_eq!(e.kind, "SyntaxError");
    assert_eq!((e.file.as_deref(), e.line), (Some(syntax.as_str()), Some(3)));

    let e = run(&pool, &missing, "f", vec![]).unwrap_err();
    assert_eq!(e.kind, "ScriptNotFound");
    assert_eq!(e.file.as_deref(), Some(missing.as_str()));
    assert!(e.message.contains("nowhere.py") && e.message.contains("No such file"), "{}", e.message);

    let e = run(&pool, &good, "nope", vec![]).unwrap_err();
    assert_eq!(e.kind, "MissingFunction");
    assert_eq!(e.file.as_deref(), Some(good.as_str()));
    assert!(e.message.contains("'nope'"));

    let e = run(&pool, &not_a_function, "f", vec![]).unwrap_err();
    assert_eq!(e.kind, "MissingFunction");
    assert!(e.message.contains("int, not a function"));

    let e = run(&pool, &returns_set, "f", vec![]).unwrap_err();
    assert_eq!(e.kind, "ResultNotJSON");
    assert!(e.message.contains("set"));

    let e = run(&pool, &exits, "f", vec![]).unwrap_err();
    assert_eq!(e.kind, "SystemExit");
    assert_eq!(e.line, Some(4));

    let e = run(&pool, &good, "add", vec![json!(1)]).unwrap_err();
    assert_eq!(e.kind, "TypeError");
    assert!(e.message.contains("missing 1 required positional argument"));

    assert_eq!(run(&pool, &good, "add", vec![json!(1), json!(2)]).unwrap(), json!(3));
    assert_eq!(pool.pids(), vec![pid], "the same worker served every job");
    assert_eq!(pool.restarts(), 0);
}

#[test]
fn a_changed_script_is_reloaded() {
    let dir = ScriptDir::new("reload");
    let script = dir.write("v.py", "def version():\n    return 1\n");
    let pool = pool(1);
    assert_eq!(run(&pool, &script, "version", vec![]).unwrap(), json!(1));
    dir.write("v.py", "def version():\n    return 22\n");
    assert_eq!(run(&pool, &script, "version", vec![]).unwrap(), json!(22));
}

#[test]
fn large_arguments_and_results_cross_in_many_fragments() {
    let dir = ScriptDir::new("large");
    let script = dir.write("echo.py", "def echo(values):\n    return {'n': len(values), 'values': values}\n");
    let values: Vec<Value> = (0..50_000).map(|i| json!(i * 3)).collect();
    let pool = pool(1);
    let out = run(&pool, &script, "echo", vec![Value::Array(values.clone())]).unwrap();
    assert_eq!(out["n"], json!(50_000));
    assert_eq!(out["values"], Value::Array(values));
}

#[test]
fn scripts_can_import_the_outboard_module() {
    let dir = ScriptDir::new("module");
    let script = dir.write(
        "m.py",
        "import outboard\n\ndef index():\n    outboard.log('hello from a test')\n    return outboard.worker_index\n",
    );
    let pool = pool(1);
    assert_eq!(run(&pool, &script, "index", vec![]).unwrap(), json!(0));
}

#[test]
fn a_killed_worker_fails_its_job_and_is_replaced() {
    let dir = ScriptDir::new("kill");
    let script = dir.write("who.py", WHO);
    let pool = pool(1);
    let old = pool.pids()[0];
    let ticket = pool.submit(JobRequest::new(&script, "who", vec![json!(30)]));
    std::thread::sleep(Duration::from_millis(300));
    let pid = rustix::process::Pid::from_raw(old as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    let e = pool.wait(ticket).unwrap_err();
    assert_eq!(e.kind, "WorkerDied");
    assert!(e.message.contains(&old.to_string()), "{}", e.message);
    assert_eq!(pool.restarts(), 1);
    let new = run(&pool, &script, "who", vec![json!(0)]).unwrap().as_u64().unwrap();
    assert_ne!(new, u64::from(old));
}

#[test]
fn results_come_back_by_id_with_many_jobs_in_flight() {
    let dir = ScriptDir::new("by-id");
    let script = dir.write("who.py", WHO);
    let pool = pool(2);
    let tickets: Vec<_> =
        (0..600).map(|i| (i, pool.submit(JobRequest::new(&script, "add", vec![json!(i), json!(i)])))).collect();
    assert!(tickets.windows(2).all(|w| w[0].1.id() < w[1].1.id()), "ids count up");
    // Collected in an order unrelated to submission: every result is its own job's.
    let mut order: Vec<usize> = (0..tickets.len()).collect();
    order.sort_by_key(|&k| (k * 7919) % tickets.len());
    for k in order {
        let (i, ticket) = tickets[k];
        assert_eq!(pool.wait(ticket).unwrap(), json!(2 * i), "job {i}");
    }
    let (_, first) = tickets[0];
    assert_eq!(pool.wait(first).unwrap_err().kind, "UnknownJob", "a result is handed out once");
    assert_eq!(pool.stats().total_jobs(), 600);
    // try_result: None while pending, then the result, once.
    let slow = pool.submit(JobRequest::new(&script, "who", vec![json!(0.3)]));
    assert!(pool.try_result(slow).is_none());
    let pid = pool.wait(slow).unwrap().as_u64().unwrap();
    assert!(pool.pids().iter().any(|&p| u64::from(p) == pid));
    assert_eq!(pool.try_result(slow).unwrap().unwrap_err().kind, "UnknownJob");
}

#[test]
fn jobs_spread_over_the_workers_even_one_at_a_time() {
    let dir = ScriptDir::new("spread");
    let script = dir.write("who.py", WHO);
    let pool = pool(2);
    let mut expected: Vec<u64> = pool.pids().into_iter().map(u64::from).collect();
    expected.sort();
    // One at a time: each job waited for before the next is submitted.
    let mut pids: Vec<u64> =
        (0..10).map(|_| run(&pool, &script, "who", vec![json!(0)]).unwrap().as_u64().unwrap()).collect();
    pids.sort();
    pids.dedup();
    assert_eq!(pids, expected, "one-at-a-time jobs ran on every worker");
    // All at once: every worker ran some.
    let before: Vec<u64> = pool.stats().rows.iter().map(|r| r.jobs).collect();
    for result in pool.run_all((0..400).map(|i| JobRequest::new(&script, "add", vec![json!(i), json!(1)]))) {
        result.unwrap();
    }
    let after: Vec<u64> = pool.stats().rows.iter().map(|r| r.jobs).collect();
    assert_eq!(after.iter().sum::<u64>() - before.iter().sum::<u64>(), 400);
    assert!(
        after.iter().zip(&before).all(|(a, b)| a > b),
        "every worker ran some of 400 jobs: {before:?} -> {after:?}"
    );
}

#[test]
fn the_pool_works_from_any_thread() {
    let dir = ScriptDir::new("threads");
    let script = dir.write("who.py", WHO);
    // Made on a thread that then ends: its workers must not die with it.
    let pool = std::thread::spawn(|| pool(2)).join().unwrap();
    let pids = pool.pids();
    assert_eq!(run(&pool, &script, "add", vec![json!(1), json!(2)]).unwrap(), json!(3));
    // Shared by four threads at once, each submitting and waiting for its own.
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (pool, script) = (&pool, &script);
            scope.spawn(move || {
                for i in 0..100 {
                    let ticket = pool.submit(JobRequest::new(script, "add", vec![json!(t * 1000), json!(i)]));
                    assert_eq!(pool.wait(ticket).unwrap(), json!(t * 1000 + i));
                }
            });
        }
    });
    // A job submitted on one thread, waited for on another.
    let ticket = pool.submit(JobRequest::new(&script, "add", vec![json!(20), json!(22)]));
    let pool = std::sync::Arc::new(pool);
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.wait(ticket))
    };
    assert_eq!(waiter.join().unwrap().unwrap(), json!(42));
    assert_eq!(pool.pids(), pids, "the same workers throughout");
    assert_eq!(pool.restarts(), 0);
}
