"""The multi-process topology: `kvstore`, `encoder` and `answer` worker processes under a
supervisor in the server process, talking over ZeroMQ with the typed messages of
`streamvqa.proto.ipc`; block bytes move through the store's shared memory. See docs/processes.md.
"""
