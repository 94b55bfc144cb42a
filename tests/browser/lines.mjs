// The drivers' protocol: one JSON request per line on stdin, each answered
// by `handle` with one JSON line on stdout (a thrown error as {error}).

import { createInterface } from 'node:readline';

export async function answerLines(handle, describe = String) {
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    let answer;
    try {
      answer = await handle(JSON.parse(line));
    } catch (error) {
      answer = { error: describe(error) };
    }
    process.stdout.write(`${JSON.stringify(answer)}\n`);
  }
}
