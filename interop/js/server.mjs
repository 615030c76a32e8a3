// A Node CapTP server for the Python interop tests and benchmark.
//
//   node [--expose-gc] server.mjs [--host 127.0.0.1] [--port 0] [--gc-imports] [--verbose]
//
// Runs under full SES lockdown (@endo/init), as the Endo daemon does, and
// serves every TCP connection with its own makeCapTP (netstring framing).
// Prints `listening PORT` once it accepts connections.  Each connection gets
// a bootstrap object with a spread of methods (see makeBootstrap below).
import '@endo/init';

import net from 'node:net';
import { makeCapTP, E } from '@endo/captp';
import { Far } from '@endo/far';
import { makeTagged } from '@endo/marshal';

import { delay, makeFrameReader, makeKit, parseArgs, writeFrame } from './lib/netstring.mjs';

const opts = parseArgs(process.argv.slice(2), {
  host: '127.0.0.1',
  port: '0',
  gcImports: false,
  verbose: false,
});

// Server-wide log of notable events, readable from any connection with
// E(boot).events(): how calls held across a disconnect ended, etc.
const serverEvents = [];
const note = event => {
  serverEvents.push(harden(event));
  if (opts.verbose) console.error('event', JSON.stringify(event));
};

const errorCtors = harden({
  Error,
  TypeError,
  RangeError,
  ReferenceError,
  SyntaxError,
  EvalError,
  URIError,
});

const forceGC = async () => {
  if (typeof globalThis.gc !== 'function') throw Error('run node with --expose-gc');
  for (let i = 0; i < 6; i += 1) {
    globalThis.gc();
    // FinalizationRegistry callbacks run in later tasks.
    await delay(20);
  }
};

const singleton = Far('Singleton', { hi: () => 'hi from the singleton' });

const makeBootstrap = ctx => {
  /** Mutable per-connection state (kept outside the hardened bootstrap). */
  const held = [];
  return Far('Bootstrap', {
    ping: () => 'pong',
    echo: (...args) => harden(args),
    add: (a, b) => a + b,
    makeCounter: (start = 0) => {
      let n = start;
      return Far('Counter', { incr: () => (n += 1), get: () => n });
    },
    getRecord: () => harden({ foo: 'bar', n: 42 }),
    makeAdder: () => Far('adder', (a, b) => a + b),
    getSingleton: () => singleton,
    // async: the answer then follows a plain promise, so the question
    // promise can be collected (and dropped: CTP_DROP q-N) once it settles.
    callMe: async (fn, ...args) => E(fn)(...args),
    callMethod: (obj, method, ...args) => E(obj)[method](...args),
    sameAs: (a, b) => a === b,
    awaitArg: async p => harden(['got', await p]),
    makeDeferred: () => {
      const kit = makeKit();
      const resolver = Far('Resolver', {
        resolve: value => kit.resolve(value),
        reject: message => kit.reject(Error(message)),
      });
      return harden({ promise: kit.promise, resolver });
    },
    fail: (message, name = 'Error') => {
      const Ctor = errorCtors[name] || Error;
      throw Ctor(message);
    },
    rejectWith: value => Promise.reject(value),
    types: () =>
      harden({
        '@qclass': 'hilbert',
        arr: [1, 1.5, 'two', null, true],
        big: 12345678901234567890n,
        negBig: -7n,
        inf: Infinity,
        ninf: -Infinity,
        nan: NaN,
        negZero: -0,
        undef: undefined,
        sym: Symbol.for('foo'),
        wellKnown: Symbol.asyncIterator,
        tagged: makeTagged('copySet', ['a', 'b']),
        err: RangeError('nested error'),
        special: '#hash $dollar &amp !bang',
        lone: '\ud800',
        astral: { '\u{1F600}': 1, '\uffff': 2 },
      }),
    never: () => new Promise(() => {}),
    hold: x => {
      held.push(x);
      return held.length;
    },
    release: () => {
      held.length = 0;
      return true;
    },
    gc: async () => {
      await forceGC();
      return ctx.getStats();
    },
    stats: () => ctx.getStats(),
    holdCall: (fn, ...args) => {
      const name = ctx.id;
      E(fn)(...args).then(
        value => note({ conn: name, holdCall: 'fulfilled', value: String(value) }),
        reason => note({ conn: name, holdCall: 'rejected', reason: describe(reason) }),
      );
      return true;
    },
    abortSoon: reason => {
      setTimeout(() => ctx.abort(reason === undefined ? undefined : Error(reason)), 20);
      return true;
    },
    events: () => harden([...serverEvents]),
  });
};

const describe = reason => {
  if (reason instanceof Error) return `${reason.name}: ${reason.message}`;
  try {
    return JSON.stringify(reason);
  } catch {
    return String(reason);
  }
};

let count = 0;
const server = net.createServer(socket => {
  socket.setNoDelay(true);
  count += 1;
  const id = `server-conn${count}`;
  const ctx = { id };
  const send = obj => {
    if (!socket.destroyed && socket.writable) writeFrame(socket, JSON.stringify(obj));
  };
  const { dispatch, abort, getStats } = makeCapTP(id, send, makeBootstrap(ctx), {
    gcImports: opts.gcImports,
    onReject: err => {
      if (opts.verbose) console.error('CapTP', id, 'onReject:', err);
    },
  });
  Object.assign(ctx, { abort, getStats });
  const read = makeFrameReader(text => dispatch(JSON.parse(text)));
  socket.on('data', chunk => {
    try {
      read(chunk);
    } catch (e) {
      console.error(id, 'bad input:', e.message);
      socket.destroy();
    }
  });
  socket.on('error', () => {});
  socket.on('close', () => {
    note({ conn: id, closed: true });
    abort();
  });
});

server.listen(Number(opts.port), opts.host, () => {
  console.log(`listening ${server.address().port}`);
});
