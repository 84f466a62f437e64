// A portal page that does not wait for its slowest provider: @apollo/client (core, no React)
// with an HttpLink, the normalised InMemoryCache and an incremental handler, watching a page
// whose invoices are in a @defer fragment and a ticket list whose edges are @stream-ed.
// Every result Apollo emits is what the page would render at that moment.
//
// env: GATEWAY_URL, TOKEN, HANDLER ("defer20220824" or "graphql17Alpha9": which of Apollo
//      Client's incremental handlers, hence which Accept and wire format)
// stdout: one JSON report {"page": [renders], "stream": [renders], "accept": [...]}
'use strict';

const { ApolloClient, HttpLink, InMemoryCache, gql } = require('@apollo/client');
const { Defer20220824Handler, GraphQL17Alpha9Handler } = require('@apollo/client/incremental');

const PAGE = gql`
  query DeferredHome {
    me {
      id
      name
      tickets(first: 3) { edges { node { id subject } } }
      ... @defer(label: "billing") {
        invoices(first: 5) { edges { node { id total } } }
      }
    }
  }
`;

const STREAM = gql`
  query StreamedTickets {
    me {
      id
      tickets(first: 5) { edges @stream(initialCount: 2) { node { id subject } } }
    }
  }
`;

const accepts = [];

function client() {
  const handler =
    process.env.HANDLER === 'graphql17Alpha9' ? new GraphQL17Alpha9Handler() : new Defer20220824Handler();
  return new ApolloClient({
    link: new HttpLink({
      uri: `${process.env.GATEWAY_URL}/graphql`,
      headers: { authorization: `Bearer ${process.env.TOKEN}` },
      // what the link sent, to show which format was negotiated
      fetch: (uri, options) => {
        accepts.push(options.headers.accept);
        return fetch(uri, options);
      },
    }),
    cache: new InMemoryCache(),
    incrementalHandler: handler,
  });
}

// every result a watched query emits, with the ms since start, until one is complete and
// nothing follows it for a moment (with only @stream, Apollo may call the first chunk's
// data complete: the items that follow still come as further results)
function renders(apollo, query) {
  const started = Date.now();
  const seen = [];
  return new Promise((resolve, reject) => {
    let quiet = null;
    const subscription = apollo.watchQuery({ query }).subscribe({
      next(result) {
        if (result.loading && !result.data) return;
        seen.push({
          at: Date.now() - started,
          dataState: result.dataState,
          data: result.data,
          errors: result.error ? String(result.error) : null,
        });
        clearTimeout(quiet);
        if (result.dataState === 'complete') {
          quiet = setTimeout(() => {
            subscription.unsubscribe();
            resolve(seen);
          }, 500);
        }
      },
      error: reject,
    });
  });
}

async function main(report) {
  report.page = await renders(client(), PAGE);
  report.stream = await renders(client(), STREAM);
  report.accept = accepts;
}

const report = {};
main(report)
  .catch((error) => {
    report.failure = error && error.stack ? error.stack : String(error);
  })
  .finally(() => {
    process.stdout.write(JSON.stringify(report) + '\n');
  });
