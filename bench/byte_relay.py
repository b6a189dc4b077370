#!/usr/bin/env python3
"""byte_relay.py LISTEN_PORT TARGET_PORT OUT_FILE

A TCP relay on 127.0.0.1 that counts the bytes it forwards, for
bench/remote_bench.sh: clients connect to LISTEN_PORT, each connection is
relayed to 127.0.0.1:TARGET_PORT.  On SIGTERM it writes "to_server
from_server" (bytes, all connections) to OUT_FILE and exits.  It touches
only the loopback interface."""
import asyncio
import signal
import sys

listen_port, target_port, out_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
totals = [0, 0]


async def pipe(reader, writer, i):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            totals[i] += len(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def handle(client_r, client_w):
    try:
        server_r, server_w = await asyncio.open_connection('127.0.0.1', target_port)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(pipe(client_r, server_w, 0), pipe(server_r, client_w, 1))


async def main():
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    server = await asyncio.start_server(handle, '127.0.0.1', listen_port)
    with open(out_file + '.ready', 'w') as f:
        f.write('ready\n')
    await stop
    server.close()
    with open(out_file, 'w') as f:
        f.write('%d %d\n' % (totals[0], totals[1]))


asyncio.run(main())
