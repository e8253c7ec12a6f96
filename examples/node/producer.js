// Publish a Switchboard message from Node.js, as shared.client.send() does from Python.
//
// The wire contract (README, "Producers in other languages"): the task switchboard.accept on
// the queue "send", Celery protocol 2, JSON, positional arguments
// [message id, send request, producer app id]. With an idempotency key the message id is
// uuid5(6f1c3a52-6c0e-4b0e-9a57-5b1f0b2a9c11, "<app id>:<key>"), so a retried publish is the
// same message; without one, a fresh uuid4.
//
//   SWITCHBOARD_BROKER_URL=redis://127.0.0.1:6379/0 node producer.js \
//     --to +32470120000 --text "Hi from Node" --idempotency-key order-42
//
// Prints {"message_id": ..., "task_id": ...} on one line; follow the message with
// GET /v1/messages/<message id> or `switchboard status <message id>`.
"use strict";

const celery = require("celery-node");
const { v4: uuid4, v5: uuid5 } = require("uuid");

const ACCEPT = "switchboard.accept";
const SEND_QUEUE = "send";
const IDEMPOTENCY_NAMESPACE = "6f1c3a52-6c0e-4b0e-9a57-5b1f0b2a9c11";

/** The message id Switchboard expects: derived from the key per app, else random. */
function messageId(idempotencyKey, appId) {
  return idempotencyKey ? uuid5(`${appId}:${idempotencyKey}`, IDEMPOTENCY_NAMESPACE) : uuid4();
}

/** celery-node speaks redis:// and amqp://; kombu's unix-socket forms become ioredis's path. */
function brokerOf(url) {
  const socket = url.match(/^(?:redis\+socket|unix):\/\/([^?]+)/);
  if (socket) {
    return { url: "redis://localhost", options: { path: socket[1] } };
  }
  return { url, options: {} };
}

/** Publish one switchboard.accept and wait until the broker has it. */
async function send(brokerUrl, request, { appId = "default" } = {}) {
  const id = messageId(request.idempotency_key, appId);
  const taskId = uuid4();
  const broker = brokerOf(brokerUrl);
  const client = celery.createClient(broker.url, broker.url, SEND_QUEUE);
  client.conf.CELERY_BROKER_OPTIONS = broker.options;
  const message = client.createTaskMessage(taskId, ACCEPT, [id, request, appId], {});
  try {
    await client.broker.isReady();
    // Straight to the broker (not client.sendTask) so we know it was published before exit.
    await client.broker.publish(message.body, "", SEND_QUEUE, message.headers,
                                message.properties);
  } finally {
    await client.broker.disconnect();
  }
  return { message_id: id, task_id: taskId };
}

function parseArgs(argv) {
  const args = { route: "viber,sms", app: "default" };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, "").replace(/-/g, "_");
    args[name] = argv[i + 1];
  }
  return args;
}

function requestOf(args) {
  if (args.request) {
    return JSON.parse(args.request); // a whole send request, as POST /v1/messages takes it
  }
  const request = { to: { phone: args.to }, route: args.route.split(","), text: args.text };
  if (args.sms_text) request.sms_text = args.sms_text;
  if (args.idempotency_key) request.idempotency_key = args.idempotency_key;
  return request;
}

async function main() {
  const brokerUrl = process.env.SWITCHBOARD_BROKER_URL;
  if (!brokerUrl) {
    console.error("set SWITCHBOARD_BROKER_URL to the broker Switchboard's workers use");
    process.exit(2);
  }
  const args = parseArgs(process.argv.slice(2));
  const sent = await send(brokerUrl, requestOf(args), { appId: args.app });
  console.log(JSON.stringify(sent));
}

if (require.main === module) {
  main().catch((err) => {
    console.error(`could not publish: ${err.message}`);
    process.exit(1);
  });
}

module.exports = { send, messageId };
