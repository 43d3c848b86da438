"""The benchmark harness behind bench/run.py.

One broker, one input topic, every variant reading it with a group of its own:

    data      generates the synthetic transactions in chunks, produces them, and keeps per record
              what the checks need (value CRC, the model's score computed here with onnxruntime)
    procs     starts the processes under test (runtime, Python pipelines) from a snapshot of the
              build outputs, optionally pinned with taskset, waits until their group has
              committed the end of the input while sampling their memory and CPU, and stops them
    cpu       user+sys CPU of the process under test and of those beside it (broker, load
              generator) from /proc, sampled on a thread; CPU-µs per record over the rate's window
    verify    reads an output topic back and checks it: count, distinct ids, content, committed
              offsets; throughput from the first to the last output record's timestamp
    variants  B1 (pass-through ceiling), B2 (fraud pipeline), B4 (model server, per record and
              batched), B5 (skilled Python, Python pass-through, stdlib json, Quix Streams),
              B7 (memory on a backlog, fraud and pass-through plugin)
    pinned    B8: B1, B2 and the two fast Python pipelines on CPU 1, broker and harness on CPU 0
    latency   B6: records offered at a fixed rate to the runtime and to the skilled Python
              pipeline, latency from input to output timestamps
    external  B3 (the plugin-bench binary) and B4's ideal gRPC client, as subprocesses
    report    machine facts, the table, the targets, BENCHMARKS.md
    result    what a variant returns
"""
