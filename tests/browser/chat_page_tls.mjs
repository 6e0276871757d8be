// Drives Debian's Chromium, headless, through the chat page served over TLS: the page
// loads from https://, its WebSocket goes to wss:// (the page picks the scheme it was
// loaded with), and it chats with tests/browser.rs's TCP member `tcpbob` in the lobby.
//   node tests/browser/chat_page_tls.mjs https://127.0.0.1:PORT/ SPKI_SHA256_BASE64
// Chromium trusts exactly the server's key (--ignore-certificate-errors-spki-list),
// not every certificate. Prints "ready" once the page is in the lobby, then waits for
// tcpbob's message; exits 0 when every step was seen, 1 otherwise.
import { chromium } from "playwright-core";

const [url, spki] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    `--ignore-certificate-errors-spki-list=${spki}`,
  ],
});
const timeout = 15000;

async function logShows(page, text) {
  const shown = (text) => [...document.querySelectorAll("#log div")]
    .some((line) => line.textContent.includes(text));
  try {
    await page.waitForFunction(shown, text, { timeout });
  } catch (error) {
    throw new Error(`the log did not show ${JSON.stringify(text)}: ${error.message}`);
  }
}
function check(condition, what) {
  if (!condition) throw new Error(what);
}

try {
  const page = await browser.newPage();
  const opened = [];
  page.on("websocket", (socket) => opened.push(socket.url()));
  await page.goto(url);
  check(await page.evaluate(() => location.protocol) === "https:", "the page is not on https");
  await page.getByText("connected: choose a name").waitFor({ timeout });
  check(opened.length === 1 && opened[0].startsWith("wss://"), `the WebSocket went to ${opened}`);
  await page.fill("#name", "tlsalice");
  await page.click("#hello-form button");
  await page.locator("#me").getByText("you are tlsalice").waitFor({ timeout });
  await page.click("#join-form button");
  await logShows(page, "* you joined lobby");
  console.log("ready");
  await page.fill("#text", "hello over wss");
  await page.press("#text", "Enter");
  await logShows(page, "[lobby] tcpbob: hello over tcp");
  console.log("done");
  await browser.close();
  process.exit(0);
} catch (error) {
  console.error(`the chat page over TLS failed: ${error}`);
  await browser.close();
  process.exit(1);
}
