# Outpost appliance image: build native modules in one stage, run as non-root from a slim Debian image.
FROM node:20-bookworm-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY appliance ./appliance
COPY sync ./sync
COPY lookup ./lookup
COPY ui ./ui
COPY scripts ./scripts
COPY bin ./bin
COPY tsconfig.json README.md ./

FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    OUTPOST_DATA_DIR=/data \
    OUTPOST_HOST=0.0.0.0 \
    OUTPOST_PORT=8080
WORKDIR /app
COPY --from=build /app /app
RUN mkdir -p /data && chown node:node /data && chmod 700 /data
# Worker threads' compiled module graphs (appliance/worker.ts), written on first use by the `node` user.
RUN mkdir -p /app/node_modules/.cache/outpost && chown node:node /app/node_modules/.cache/outpost
USER node
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s CMD node -e "fetch('http://127.0.0.1:8080/healthz').then(r=>process.exit(r.status===200?0:1)).catch(()=>process.exit(1))"
ENTRYPOINT ["node", "bin/outpost.js"]
CMD ["serve"]
