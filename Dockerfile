# runwatch agent image. Build: docker build -t runwatch .
# Run (it watches the host, so it needs the host's pid and network namespaces and the Docker socket):
#   docker run -d --name runwatch --pid host --network host --cap-add SYS_ADMIN --cap-add NET_ADMIN --cap-add SYS_PTRACE \
#     --cap-add SYS_NICE --cap-add DAC_READ_SEARCH -v /var/run/docker.sock:/var/run/docker.sock \
#     -v /var/lib/docker:/var/lib/docker:ro -v /sys/fs/cgroup:/sys/fs/cgroup:ro -v /var/lib/runwatch:/var/lib/runwatch \
#     -v /var/log/runwatch:/var/log/runwatch -e APPLICATIONINSIGHTS_CONNECTION_STRING runwatch
FROM node:20-bookworm-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json binding.gyp* ./
COPY agent ./agent
COPY bench ./bench
COPY tsconfig.json ./
RUN npm ci --nodedir=/usr/local && npm prune --omit=dev

FROM node:20-bookworm-slim
ENV NODE_ENV=production APPLICATION_INSIGHTS_NO_STATSBEAT=1
WORKDIR /opt/runwatch
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/build ./build
COPY package.json config.example.yaml ./
COPY rules ./rules
ENTRYPOINT ["node", "/opt/runwatch/dist/agent/cli/index.js"]
CMD ["run"]
