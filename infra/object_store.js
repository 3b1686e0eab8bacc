// s3rver with the two things Tansu's S3 engine relies on and s3rver 3.7 lacks.
//
// 1. Conditional writes. Tansu keeps each partition's high watermark in one object and moves
//    it with compare-and-set PUTs (If-Match: <etag>, If-None-Match: *), expecting 412 when it
//    lost a race or when its in-memory copy is stale, as after a restart. s3rver ignores those
//    headers, so a restarted broker would write from offset 0 over acknowledged batches. Here
//    every request for one key runs alone (a per-key queue), and a PUT's preconditions are
//    checked against the stored ETag first.
// 2. Whole files. s3rver streams a PUT straight into the object's file and rewrites its
//    checksum and metadata files in place, so a kill mid-write leaves half an object, and a
//    reader can see half a file; here each file is written aside and renamed over the old one.
//
// Usage: node object_store.js <s3rver package dir> <data dir> <port> <bucket>
'use strict';

const crypto = require('crypto');
const fs = require('fs').promises;
const path = require('path');

const [packageDir, directory, port, bucket] = process.argv.slice(2);
const S3rver = require(packageDir);
const S3Error = require(path.join(packageDir, 'lib', 'models', 'error'));
const S3Object = require(path.join(packageDir, 'lib', 'models', 'object'));

const server = new S3rver({
  directory, address: '127.0.0.1', port: Number(port), silent: true,
  configureBuckets: [{ name: bucket, configs: [] }],
});
const store = server.store;

const queues = new Map();

// Run fn after every earlier call for the same key has finished.
async function serialized(key, fn) {
  const before = queues.get(key) || Promise.resolve();
  let done;
  const mine = before.then(() => new Promise(resolve => { done = resolve; }));
  queues.set(key, mine);
  await before;
  try {
    return await fn();
  } finally {
    done();
    if (queues.get(key) === mine) queues.delete(key);
  }
}

async function currentETag(bucketName, key) {
  try {
    return (await store.getMetadata(bucketName, key)).etag;
  } catch (err) {
    if (err.code === 'ENOENT') return null;
    throw err;
  }
}

function tags(header) {
  return header.split(',').map(tag => tag.trim().replace(/^W\//, ''));
}

// Whether an If-Match / If-None-Match header names the stored object (etag null: none).
function matches(header, etag) {
  return etag !== null && (header.trim() === '*' || tags(header).includes(etag));
}

function checkPreconditions(headers, etag) {
  for (const [name, holds] of [['If-None-Match', false], ['If-Match', true]]) {
    const header = headers[name.toLowerCase()];
    if (header && matches(header, etag) !== holds) {
      throw new S3Error('PreconditionFailed',
        'At least one of the pre-conditions you specified did not hold', { Condition: name });
    }
  }
}

server.middleware.unshift(async (ctx, next) => {
  const parts = ctx.path.split('/').slice(1).map(decodeURIComponent);
  if (!['GET', 'HEAD', 'PUT', 'DELETE'].includes(ctx.method) || parts.length < 2 || !parts[1]) {
    return next();
  }
  const [bucketName, ...keyParts] = parts;
  const key = keyParts.join('/');
  return serialized(`${bucketName}/${key}`, async () => {
    if (ctx.method === 'PUT') checkPreconditions(ctx.headers, await currentETag(bucketName, key));
    return next();
  });
});

let writes = 0;

// Write a file whole: readers and crashes see the old content or the new, never a part.
async function replaceFile(file, content) {
  const temporary = `${file}.${process.pid}-${++writes}.tmp`;
  await fs.writeFile(temporary, content);
  await fs.rename(temporary, file);
}

store.putObject = async function putObject(object) {
  const objectPath = this.getResourcePath(object.bucket, object.key, 'object');
  await fs.mkdir(path.dirname(objectPath), { recursive: true });
  let content = object.content;
  if (!Buffer.isBuffer(content)) {
    const chunks = [];
    for await (const chunk of content) chunks.push(chunk);
    content = Buffer.concat(chunks);
  }
  const md5 = crypto.createHash('md5').update(content).digest('hex');
  // Temporary names do not end in s3rver's object suffix, so listings never show them.
  await replaceFile(objectPath, content);
  await this.putMetadata(object.bucket, object.key, object.metadata, md5);
  return { size: content.length, md5 };
};

// The same files as s3rver's own putMetadata (an MD5 that serves as ETag, and the headers
// kept with the object), written whole.
store.putMetadata = async function putMetadata(bucketName, key, metadata, md5) {
  const kept = {};
  for (const [name, value] of Object.entries(metadata)) {
    if (S3Object.ALLOWED_METADATA.includes(name) || name.startsWith('x-amz-meta-')) {
      kept[name] = value;
    }
  }
  if (md5) await replaceFile(this.getResourcePath(bucketName, key, 'object.md5'), md5);
  await replaceFile(this.getResourcePath(bucketName, key, 'metadata.json'),
    JSON.stringify(kept, null, 2));
};

server.run().then(({ address, port: bound }) => {
  console.log('object store listening on %s:%d', address, bound);
}, err => {
  console.error(err);
  process.exit(1);
});
