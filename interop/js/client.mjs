// A Node CapTP client that drives a Python Endo CapTP server through a script.
//
//   node [--expose-gc] client.mjs --port PORT [--host 127.0.0.1] [--script basic|full|pyabort]
//                                 [--gc-imports] [--verbose]
//
// Runs under full SES lockdown (@endo/init).  Prints one JSON line per step,
// {"step": name, "ok": true|false, "got": ..., "error": ...}, then
// {"done": true, "stats": getStats()}.  Exit status 0 even when steps fail:
// the caller checks the lines.
//
// Scripts:
//   basic    what interop.endo_peer serves (ping, echo, counters, callbacks, ...)
//   full     basic plus the extra methods of the pytest server (GC, disconnect)
//   pyabort  the Python server disconnects while a call is pending
import '@endo/init';

import net from 'node:net';
import { makeCapTP, E } from '@endo/captp';
import { Far } from '@endo/far';
import { getTag, makeTagged, passStyleOf } from '@endo/marshal';

import { delay, makeFrameReader, makeKit, parseArgs, writeFrame } from './lib/netstring.mjs';

const opts = parseArgs(process.argv.slice(2), {
  host: '127.0.0.1',
  port: '0',
  script: 'basic',
  gcImports: false,
  verbose: false,
  stepTimeout: '5000',
});

// -- output -------------------------------------------------------------------

const show = value =>
  JSON.parse(
    JSON.stringify(value === undefined ? '<undefined>' : value, (_k, v) => {
      if (v === undefined) return '<undefined>';
      if (typeof v === 'bigint') return `${v}n`;
      if (typeof v === 'symbol') return String(v);
      if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
      if (v instanceof Error) return `${v.name}: ${v.message}`;
      if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
        try {
          const style = passStyleOf(v);
          if (style === 'remotable') return `<remotable ${String(v)}>`;
          if (style === 'tagged') return { tag: getTag(v), payload: v.payload };
          if (style === 'promise') return '<promise>';
        } catch {
          // not passable: print as is
        }
      }
      return v;
    }),
  );

const describe = reason => {
  if (reason instanceof Error) return `${reason.name}: ${reason.message}`;
  try {
    return JSON.stringify(reason);
  } catch {
    return String(reason);
  }
};

const print = obj => process.stdout.write(`${JSON.stringify(obj)}\n`);

// -- pass-invariant equality --------------------------------------------------

const same = (a, b) => {
  if (Object.is(a, b)) return true;
  if (typeof a === 'number' && typeof b === 'number') return Number.isNaN(a) && Number.isNaN(b);
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  const style = passStyleOf(a);
  if (style !== passStyleOf(b)) return false;
  switch (style) {
    case 'copyArray':
      return a.length === b.length && a.every((x, i) => same(x, b[i]));
    case 'copyRecord': {
      const ka = Object.keys(a).sort();
      const kb = Object.keys(b).sort();
      return same(harden(ka), harden(kb)) && ka.every(k => same(a[k], b[k]));
    }
    case 'tagged':
      return getTag(a) === getTag(b) && same(a.payload, b.payload);
    case 'error':
      return a.name === b.name && a.message === b.message;
    default:
      return false;
  }
};

// Values sent to echo(); [sent, expected] where marshal changes the value.
const VALUES = harden({
  undefined: [undefined],
  null: [null],
  true: [true],
  false: [false],
  integer: [42],
  float: [-1.5],
  negZero: [-0, 0],
  nan: [NaN],
  infinity: [Infinity],
  negInfinity: [-Infinity],
  twoTo53: [2 ** 53],
  tiny: [5e-324],
  huge: [-1.5e300],
  small: [1e-7],
  e21: [1e21],
  point1: [0.1],
  bigint: [12345678901234567890n],
  negBigint: [-7n],
  zeroBigint: [0n],
  hugeBigint: [-(2n ** 200n)],
  string: ['h\u00e9llo \u2713 \u{1F600}'],
  emptyString: [''],
  specialString: ['#hash $dollar &amp !bang'],
  controlString: ['\u0000\u001f"\\/\u2028\u2029\u007f\t\n'],
  loneSurrogate: ['\ud800'],
  loneLowSurrogate: ['x\udc00y'],
  symbol: [Symbol.for('foo')],
  wellKnownSymbol: [Symbol.asyncIterator],
  atAtSymbol: [Symbol.for('@@x')],
  array: [[1, 'a', null, [true]]],
  emptyArray: [[]],
  record: [{ z: 1, a: 'x', m: [true, null] }],
  emptyRecord: [{}],
  hilbert: [{ '@qclass': 'x', y: 1 }],
  hilbertOnly: [{ '@qclass': 'only' }],
  hilbertNested: [{ '@qclass': { '@qclass': 'deep' }, rest: 1 }],
  astralKeys: [{ '\u{1F600}': 1, '\uffff': 2, a: 3 }],
  specialKeys: [{ '#k': 1, '!k': 2, '': 3, '@qclasz': 4 }],
  tagged: [makeTagged('copySet', ['a', 'b'])],
  taggedWeirdTag: [makeTagged('#weird', null)],
  error: [Error('boom')],
  typeError: [TypeError('bad type')],
  rangeError: [RangeError('out of range')],
  nested: [{ list: [{ deep: [1n, undefined, null, { e: Error('inner') }] }] }],
});

const rejectsWith = async (promise, check) => {
  try {
    const value = await promise;
    return { ok: false, got: show(value), error: 'fulfilled, expected a rejection' };
  } catch (e) {
    return { ok: check(e), got: describe(e) };
  }
};

const eq = (got, expected) => ({ ok: same(harden(got), harden(expected)), got: show(got) });

const forceGC = async () => {
  if (typeof globalThis.gc !== 'function') throw Error('run node with --expose-gc');
  for (let i = 0; i < 6; i += 1) {
    globalThis.gc();
    await delay(20);
  }
};

const poll = async (fn, done, ms = 4000) => {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    // eslint-disable-next-line no-await-in-loop
    last = await fn();
    if (done(last) || Date.now() > end) return last;
    // eslint-disable-next-line no-await-in-loop
    await forceGC();
  }
};

// -- scripts ------------------------------------------------------------------

const basicSteps = ctx => {
  const { boot } = ctx;
  const steps = [];
  const step = (name, fn) => steps.push([name, fn]);

  step('ping', async () => eq(await E(boot).ping(), 'pong'));
  for (const [name, [sent, ...rest]] of Object.entries(VALUES)) {
    const expected = rest.length ? rest[0] : sent;
    step(`echo:${name}`, async () => eq(await E(boot).echo(sent), [expected]));
  }
  step('echo:all', async () => {
    const sent = Object.values(VALUES).map(([s]) => s);
    const expected = Object.values(VALUES).map(([s, ...r]) => (r.length ? r[0] : s));
    return eq(await E(boot).echo(...sent), expected);
  });
  step('pipeline', async () => {
    const counter = E(boot).makeCounter(10);
    return eq(await Promise.all([E(counter).incr(), E(counter).incr()]), [11, 12]);
  });
  step('pipelineGet', async () => eq(await E.get(E(boot).getRecord()).foo, 'bar'));
  step('functionCall', async () => eq(await E(E(boot).makeAdder())(1, 2), 3));
  step('callback', async () => eq(await E(boot).callMe(Far('doubler', x => x * 2), 21), 42));
  step('callbackMethod', async () => {
    const greeter = Far('Greeter', { hello: who => `hello ${who}` });
    return eq(await E(boot).callMethod(greeter, 'hello', 'py'), 'hello py');
  });
  step('identityOfJsObject', async () => {
    const obj = Far('Obj', {});
    const sameTwice = await E(boot).sameAs(obj, obj);
    const [back] = await E(boot).echo(obj);
    return { ok: sameTwice === true && back === obj, got: [sameTwice, back === obj] };
  });
  step('identityOfPythonObject', async () => {
    const counter = await E(boot).makeCounter();
    const [back] = await E(boot).echo(counter);
    const n = await E(back).incr();
    return { ok: back === counter && n === 1, got: [back === counter, n] };
  });
  step('promiseArgResolvedLater', async () => {
    const kit = makeKit();
    const result = E(boot).awaitArg(kit.promise);
    await delay(20);
    kit.resolve(99);
    return eq(await result, ['got', 99]);
  });
  step('promiseArgRejectedLater', async () => {
    const kit = makeKit();
    const result = E(boot).awaitArg(kit.promise);
    await delay(20);
    kit.reject(RangeError('late'));
    return rejectsWith(result, e => e instanceof RangeError && e.message === 'late');
  });
  step('promiseResultResolvedLater', async () => {
    const { promise, resolver } = await E(boot).makeDeferred();
    setTimeout(() => E(resolver).resolve(harden({ later: [1n] })), 20);
    return eq(await promise, { later: [1n] });
  });
  step('promiseResultRejectedLater', async () => {
    const { promise, resolver } = await E(boot).makeDeferred();
    setTimeout(() => E(resolver).reject('nope'), 20);
    return rejectsWith(promise, e => e instanceof Error && e.message === 'nope');
  });
  step('unresolvedResultPassedBack', async () => {
    const [counter] = await E(boot).echo(E(boot).makeCounter(5));
    return eq(await E(counter).incr(), 6);
  });
  step('exception', async () =>
    rejectsWith(E(boot).fail('boom'), e => e instanceof TypeError && e.message === 'boom'),
  );
  step('noSuchMethod', async () =>
    rejectsWith(
      E(boot).noSuchMethod(),
      e => e instanceof TypeError && e.message.includes("has no method 'noSuchMethod'"),
    ),
  );
  return steps;
};

const fullSteps = ctx => {
  const { boot, abort } = ctx;
  const steps = basicSteps(ctx);
  const step = (name, fn) => steps.push([name, fn]);

  step('pythonErrorName', async () =>
    rejectsWith(
      E(boot).failWith('ValueError', 'bad'),
      e => e.name === 'Error' && e.message === 'ValueError: bad',
    ),
  );
  step('jsDropsQuestionsPythonFreesAnswers', async () => {
    // Python keeps an answer for every question until JS drops it; JS drops
    // a question once its promise is collected (a few may still be reachable).
    const before = await E(boot).answerCount();
    const after = await poll(() => E(boot).answerCount(), n => n <= 2);
    return { ok: before > 50 && after <= 5, got: { before, after } };
  });
  step('jsDropsPythonExports', async () => {
    const before = await E(boot).exportCount();
    let counters = [];
    for (let i = 0; i < 20; i += 1) counters.push(E(boot).makeCounter(i));
    const ns = await Promise.all(counters.map(c => E(c).incr()));
    const during = await E(boot).exportCount();
    counters = null;
    const after = await poll(() => E(boot).exportCount(), n => n <= before);
    return {
      ok: ns[19] === 20 && during >= before + 20 && after <= before,
      got: { before, during, after },
    };
  });
  step('pythonReexportsAfterDrop', async () => {
    let s = await E(boot).getSingleton();
    const first = await E(s).hi();
    s = null;
    await poll(() => E(boot).singletonExported(), exported => !exported);
    const again = await E(boot).getSingleton();
    return eq([first, await E(again).hi()], ['hi from Python', 'hi from Python']);
  });
  step('disconnectBreaksPending', async () => {
    const pending = E(boot).never();
    const hang = Far('hang', () => new Promise(() => {}));
    await E(boot).holdCall(hang);
    abort(Error('bye'));
    const result = await rejectsWith(pending, e => e instanceof Error && e.message === 'bye');
    const after = await rejectsWith(E(boot).ping(), e => e.message === 'bye');
    return { ok: result.ok && after.ok, got: [result.got, after.got] };
  });
  return steps;
};

const pyAbortSteps = ctx => {
  const { boot } = ctx;
  return [
    [
      'pythonDisconnectBreaksPending',
      async () => {
        const pending = E(boot).never();
        await E(boot).abortSoon('going away');
        const result = await rejectsWith(pending, e => e && e.message === 'going away');
        const after = await rejectsWith(E(boot).ping(), e => e && e.message === 'going away');
        return { ok: result.ok && after.ok, got: [result.got, after.got] };
      },
    ],
  ];
};

const SCRIPTS = { basic: basicSteps, full: fullSteps, pyabort: pyAbortSteps };

// -- main ---------------------------------------------------------------------

const main = async () => {
  const makeSteps = SCRIPTS[opts.script];
  if (!makeSteps) throw Error(`unknown script ${opts.script}`);
  const socket = net.connect({ host: opts.host, port: Number(opts.port) });
  socket.setNoDelay(true);
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const send = obj => {
    if (!socket.destroyed && socket.writable) writeFrame(socket, JSON.stringify(obj));
  };
  const { dispatch, getBootstrap, abort, getStats } = makeCapTP('client', send, undefined, {
    gcImports: opts.gcImports,
    onReject: err => {
      if (opts.verbose) console.error('CapTP client onReject:', err);
    },
  });
  socket.on('data', makeFrameReader(text => dispatch(JSON.parse(text))));
  socket.on('error', () => {});
  socket.on('close', () => abort());

  const boot = await getBootstrap();
  print({ step: 'bootstrap', ok: passStyleOf(boot) === 'remotable', got: String(boot) });
  const timeout = Number(opts.stepTimeout);
  for (const [name, fn] of makeSteps({ boot, abort })) {
    let line;
    try {
      // eslint-disable-next-line no-await-in-loop
      const result = await Promise.race([
        fn(),
        delay(timeout).then(() => ({ ok: false, error: `timed out after ${timeout} ms` })),
      ]);
      line = { step: name, ...result };
    } catch (e) {
      line = { step: name, ok: false, error: describe(e) };
    }
    print(line);
  }
  print({ done: true, stats: getStats() });
  abort();
  socket.end();
};

main().then(
  () => setTimeout(() => process.exit(0), 50),
  e => {
    print({ fatal: describe(e) });
    process.exit(1);
  },
);
