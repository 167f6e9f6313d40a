"""A helper the concurrency tests share: run ``work(k)`` for k in 0..n-1, one thread each, and wait."""

import threading


def run_in_threads(work, n: int) -> None:
    threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
