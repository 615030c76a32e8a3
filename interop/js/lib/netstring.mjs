// Netstring framing for CapTP over TCP, as the Endo daemon frames it:
// `<decimal UTF-8 byte length>:<JSON text>,` (see spec/endo-captp.md, section 9).
// Written for these tests: one write per frame, and a reader that hands each
// complete payload (as a string) to `onFrame`. Also the small helpers the
// Node peers share (arguments, delays, promise kits).

const COLON = 0x3a;
const COMMA = 0x2c;
const DIGITS = /^[0-9]+$/;

/** @param {import('node:net').Socket} socket @param {string} text */
export const writeFrame = (socket, text) => {
  const payload = Buffer.from(text, 'utf8');
  socket.write(Buffer.concat([Buffer.from(`${payload.length}:`), payload, Buffer.from(',')]));
};

/** @param {(text: string) => void} onFrame @returns {(chunk: Buffer) => void} */
export const makeFrameReader = onFrame => {
  let pending = Buffer.alloc(0);
  return chunk => {
    const buf = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    let pos = 0;
    for (;;) {
      const colon = buf.indexOf(COLON, pos);
      if (colon < 0) break;
      const digits = buf.toString('latin1', pos, colon);
      if (!DIGITS.test(digits)) throw Error(`bad netstring length ${JSON.stringify(digits)}`);
      const end = colon + 1 + Number(digits);
      if (end >= buf.length) break;
      if (buf[end] !== COMMA) throw Error('netstring not terminated by ","');
      onFrame(buf.toString('utf8', colon + 1, end));
      pos = end + 1;
    }
    pending = buf.subarray(pos);
  };
};

/** Parse `--name value` and `--flag` arguments. */
export const parseArgs = (argv, defaults) => {
  const opts = { ...defaults };
  for (let i = 0; i < argv.length; i += 1) {
    const key = argv[i].replace(/^--/, '');
    const camel = key.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (typeof defaults[camel] === 'boolean') {
      opts[camel] = true;
    } else {
      opts[camel] = argv[i + 1];
      i += 1;
    }
  }
  return opts;
};

export const delay = ms => new Promise(resolve => setTimeout(resolve, ms));

/** A promise with its resolve and reject functions. */
export const makeKit = () => {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
};
