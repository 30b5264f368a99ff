# Operator image for the Helm chart (charts/moe-operator). Build: docker build -t <registry>/moe-operator:0.1.0 .
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir . && rm -rf /src
USER 65532:65532
ENTRYPOINT ["moe-operator"]
CMD ["run"]
