// The Node side of bench/endo.py: a CapTP client measuring a server.
//
//   node bench.mjs --port PORT [--host 127.0.0.1] [--seconds 2] [--calls 10000] [--warmup 300]
//
// Full SES lockdown (@endo/init), one fresh connection per run (like the
// Python client it is compared with).  Measures, on that connection after a
// warm-up:
//   seq   sequential `await E(boot).ping()` for --seconds: round trips per second
//   conc  --calls concurrent `E(boot).echo(i)`: calls per second until all settled
// and prints one JSON line: {"seq": rt_per_s, "conc": calls_per_s, "rss": bytes}.
import '@endo/init';

import net from 'node:net';
import { makeCapTP, E } from '@endo/captp';

import { makeFrameReader, parseArgs, writeFrame } from './lib/netstring.mjs';

const opts = parseArgs(process.argv.slice(2), {
  host: '127.0.0.1',
  port: '0',
  seconds: '2',
  calls: '10000',
  warmup: '300',
});

const connect = async () => {
  const socket = net.connect({ host: opts.host, port: Number(opts.port) });
  socket.setNoDelay(true);
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const send = obj => writeFrame(socket, JSON.stringify(obj));
  const { dispatch, getBootstrap, abort } = makeCapTP('bench', send, undefined, {
    onReject: () => {},
  });
  socket.on('data', makeFrameReader(text => dispatch(JSON.parse(text))));
  socket.on('error', () => {});
  const boot = await getBootstrap();
  return { boot, close: () => { abort(); socket.end(); } };
};

const main = async () => {
  const { boot, close } = await connect();
  for (let i = 0; i < Number(opts.warmup); i += 1) {
    // eslint-disable-next-line no-await-in-loop
    await E(boot).ping();
  }
  await Promise.all(Array.from({ length: 1000 }, (_, i) => E(boot).echo(i)));

  const seconds = Number(opts.seconds);
  let count = 0;
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  const end = start + seconds * 1000;
  while (performance.now() < end) {
    // eslint-disable-next-line no-await-in-loop
    await E(boot).ping();
    count += 1;
  }
  const seq = count / ((performance.now() - start) / 1000);
  const cpu = process.cpuUsage(cpu0);
  const seqCpuUs = (cpu.user + cpu.system) / count;

  const calls = Number(opts.calls);
  const t0 = performance.now();
  const results = await Promise.all(Array.from({ length: calls }, (_, i) => E(boot).echo(i)));
  const conc = calls / ((performance.now() - t0) / 1000);
  if (results[calls - 1][0] !== calls - 1) throw Error('echo returned the wrong value');

  process.stdout.write(`${JSON.stringify({ seq, conc, seqCpuUs, rss: process.memoryUsage().rss })}\n`);
  close();
};

main().then(
  () => setTimeout(() => process.exit(0), 20),
  e => {
    console.error(e);
    process.exit(1);
  },
);
